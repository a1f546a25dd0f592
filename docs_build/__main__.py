"""`python -m docs_build`: build the documentation site from nbs/ into _docs/ (offline; see docs_build/__init__.py)."""
import argparse
import sys

from .build import ExecutionError, build_site


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog='python -m docs_build', description=__doc__)
    p.add_argument('--out', help="output folder (default: settings.ini's doc_path, _docs/)")
    p.add_argument('--reuse', action='store_true',
                   help='reuse executed notebooks from _proc/docs_build/ '
                        'whose cells, library and settings are unchanged')
    p.add_argument('--jobs', type=int, default=None, help='notebooks executed at once (default: CPUs, at most 4)')
    p.add_argument('--timeout', type=int, default=None, help='seconds a cell may run (default: no limit)')
    p.add_argument('--only', nargs='+', metavar='GLOB',
                   help='build only the notebooks matching these globs (e.g. index 00_*), for a quick preview')
    a = p.parse_args(argv)
    try: build_site(a.out, reuse=a.reuse, jobs=a.jobs, timeout=a.timeout, only=a.only)
    except ExecutionError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
