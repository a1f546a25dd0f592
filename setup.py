"""Packaging for daq, read from nbdev's settings.ini (written by hand: nbdev's template needs pkg_resources)."""
from configparser import ConfigParser
from pathlib import Path
from setuptools import find_packages, setup

cfg = ConfigParser(delimiters=['='])
cfg.read(Path(__file__).with_name('settings.ini'), encoding='utf-8')
c = cfg['DEFAULT']
licenses = {'apache2': ('Apache-2.0', 'License :: OSI Approved :: Apache Software License')}
lic = licenses[c['license']]
readme = Path(__file__).with_name('README.md')

setup(
    name=c['lib_name'],
    version=c['version'],
    description=c['description'],
    long_description=readme.read_text(encoding='utf-8') if readme.exists() else c['description'],
    long_description_content_type='text/markdown',
    author=c['author'],
    author_email=c['author_email'],
    license=lic[0],
    url=c['git_url'],
    keywords=c['keywords'].split(),
    classifiers=['Programming Language :: Python :: 3', 'Topic :: Scientific/Engineering :: Artificial Intelligence', lic[1]],
    python_requires='>=' + c['min_python'],
    packages=find_packages(include=['daq', 'daq.*']),
    include_package_data=True,
    package_data={'daq': ['native/*.cpp']},          # the packed kernels' C++ source, compiled at first use
    install_requires=c.get('requirements', '').split(),
    extras_require={'dev': c.get('dev_requirements', '').split(),
                    'export': c.get('export_requirements', '').split()},
    entry_points={'console_scripts': c.get('console_scripts', '').split(),
                  'nbdev': [f"{c['lib_path']}={c['lib_path']}._modidx:d"]},
    zip_safe=False,
)
