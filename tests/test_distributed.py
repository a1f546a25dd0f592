"""Training with several processes (issue 5/7), on the CPU with the gloo backend: DDP steps equal one process's steps
on the same global batch (with `global_batch_norm`; without it, equal to one process whose batch norms use per-process
statistics, which is what plain DDP computes), the quantizers stay identical on every process, networks with
parameters a configuration never uses train without `find_unused_parameters`, and `daq-train --sync-bn` under
`torchrun` writes one record and resumes a killed job bit for bit."""
import json, os, signal, socket, subprocess, sys, time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from daq.global_bn import global_batch_norm
from daq.runs import load_checkpoint, read_metrics
from daq.train import build_model, get_recipe, initialize_from, make_optimizers, train_epoch

WORLD = 2


def _worker(rank: int, init_file: str, out: str, job: str, args: tuple):
    "One process of a `WORLD`-process job: joins the group, runs `job`, saves what it returns."
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=WORLD)
    try:
        torch.save(JOBS[job](rank, *args), Path(out) / f'rank{rank}.pt')
    finally: dist.destroy_process_group()


def spawn(tmp_path: Path, job: str, *args) -> list:
    "Run `job` on `WORLD` processes; what each returned."
    mp.spawn(_worker, args=(str(tmp_path / 'init'), str(tmp_path), job, args), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in range(WORLD)]


def batches(k: int, size: int, dtype=torch.float64) -> list:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(size, 3, 32, 32, generator=g, dtype=dtype), torch.randint(0, 10, (size,), generator=g))
            for _ in range(k)]


def authors_w1a1(dtype=torch.float64) -> tuple:
    from daq.shared import shared_file
    recipe = get_recipe('cifar10-w1a1')
    model = initialize_from(build_model(recipe), shared_file('authors-fp')).to(dtype)
    return model, recipe


def ddp_steps(rank: int, global_batches: list, sync_bn: bool) -> dict:
    "The authors' W1A1 recipe from their FP checkpoint, in float64, on this process's shard of each global batch."
    model, recipe = authors_w1a1()
    if sync_bn: model = global_batch_norm(model)
    optimizers, _ = make_optimizers(model, recipe)
    shards = [(x.tensor_split(WORLD)[rank], y.tensor_split(WORLD)[rank]) for x, y in global_batches]
    after_init = {}
    def snapshot(module, args, out):                         # after the first forward: initialised, not yet stepped
        if not after_init: after_init.update({k: v.clone() for k, v in module.state_dict().items()
                                             if isinstance(v, torch.Tensor)})
    model.register_forward_hook(snapshot)
    train_epoch(DDP(model), shards, optimizers, 'cpu', progress=False)
    return dict(final=model.state_dict(), init=after_init)


def ddp_smoke(rank: int, kind: str) -> dict:
    "Two float32 steps of a network with parameters its configuration never uses, under plain DDP."
    torch.manual_seed(0)
    if kind == 'resnet20-w1a32': model, recipe = build_model(get_recipe('cifar10-w1a32')), get_recipe('cifar10-w1a32')
    else: model, recipe = build_model(get_recipe('imagenet-r18-w2a2', init=None), 10), get_recipe('imagenet-r18-w2a2')
    optimizers, _ = make_optimizers(model, recipe)
    shards = [(x.tensor_split(WORLD)[rank], y.tensor_split(WORLD)[rank]) for x, y in batches(2, 8, torch.float32)]
    train_epoch(DDP(model), shards, optimizers, 'cpu', progress=False)      # no find_unused_parameters
    return model.state_dict()


JOBS = dict(ddp_steps=ddp_steps, ddp_smoke=ddp_smoke)


def per_process_batch_norm(model: nn.Module, chunks: int):
    "Make every batch norm normalize each of `chunks` slices of a training batch with that slice's own statistics."
    for bn in model.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            def forward(x, plain=bn.forward, bn=bn):
                return torch.cat([plain(c) for c in x.tensor_split(chunks)]) if bn.training else plain(x)
            bn.forward = forward


def quantizer_keys(state: dict) -> list: return [k for k in state if k.rpartition('.')[2] in ('uW', 'lW', 'uA', 'beta')]


@pytest.fixture(scope='module')
def shared_or_skip():
    from daq.shared import find_shared
    try: return find_shared()
    except FileNotFoundError: pytest.skip("no shared/ folder with the authors' checkpoints")


def one_process(global_batches: list, per_process_statistics: bool) -> dict:
    "The same steps in one process on the global batches (optionally with per-process batch-norm statistics)."
    model, recipe = authors_w1a1()
    if per_process_statistics: per_process_batch_norm(model, WORLD)
    train_epoch(model, global_batches, make_optimizers(model, recipe)[0], 'cpu', progress=False)
    return model.state_dict()


def relative_errors(a: dict, b: dict, keys) -> dict:
    return {k: ((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-300)).item() for k in keys}


@pytest.mark.parametrize('sync_bn', [True, False], ids=['global-batch-norm', 'per-process-batch-norm'])
def test_ddp_steps_equal_one_process_on_the_global_batch(tmp_path, shared_or_skip, sync_bn):
    global_batches = batches(3, 16)
    ranks = spawn(tmp_path, 'ddp_steps', global_batches, sync_bn)
    for when in ('init', 'final'):                              # quantizers bitwise equal on every process
        for k in quantizer_keys(ranks[0][when]): assert torch.equal(ranks[0][when][k], ranks[1][when][k]), (when, k)
    model = authors_w1a1()[0]
    params = [k for k, _ in model.named_parameters()]
    floats = [k for k, v in model.state_dict().items() if torch.is_tensor(v) and v.is_floating_point()]  # + BN stats
    final = ranks[0]['final']
    if sync_bn:       # batch norm over the global batch: one process on the global batch, batch norms as they are
        errors = relative_errors(final, one_process(global_batches, False), floats)
        assert max(errors.values()) <= 1e-9, max(errors.items(), key=lambda e: e[1])
    else:             # plain DDP: each process normalizes its half; equal to that, and measurably not to the global
        errors = relative_errors(final, one_process(global_batches, True), params)
        assert max(errors.values()) <= 1e-9, max(errors.items(), key=lambda e: e[1])
        off = relative_errors(final, one_process(global_batches, False), params)
        assert max(off.values()) > 0.01, max(off.values())                # measured: 0.96 (median 0.009)
    start = model.state_dict()
    assert sum(not torch.equal(final[k], start[k]) for k in params) > 40     # the steps did change the network


@pytest.mark.parametrize('kind', ['resnet20-w1a32', 'resnet18-w2a2'])
def test_unused_parameters_need_no_find_unused(tmp_path, kind):
    ranks = spawn(tmp_path, 'ddp_smoke', kind)
    params = [k for k in ranks[0] if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked', 'state'))]
    for k in params: assert torch.equal(ranks[0][k], ranks[1][k]), k    # batch-norm statistics are per process


@pytest.fixture(scope='module')
def images(random_cifar_npz) -> Path: return random_cifar_npz(96)


def torchrun(run_dir: Path, data: Path, *extra) -> subprocess.Popen:
    "`torchrun --nproc_per_node=2 --no-python daq-train ... --sync-bn` on the CPU (gloo), in its own process group."
    daq_train = Path(sys.executable).parent / 'daq-train'
    args = ['--recipe', 'cifar10-w1a1', '--init', 'none', '--data', data, '--run-dir', run_dir, '--epochs', 3,
            '--batch-size', 16, '--device', 'cpu', '--no-progress', '--sync-bn', *extra]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]      # a free port
    return subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(WORLD),
                             '--master_port', str(port), '--no-python', str(daq_train), *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def test_torchrun_job_writes_one_record_and_resumes_bit_for_bit(tmp_path, images):
    whole = torchrun(tmp_path / 'whole', images)
    assert whole.wait(timeout=300) == 0, whole.stderr.read()[-3000:]
    summary = json.loads((tmp_path / 'whole' / 'summary.json').read_text())
    assert (summary['world_size'], summary['backend'], summary['per_process_batch']) == (WORLD, 'gloo', 8)
    assert summary['sync_bn'] is True                                      # global batch norm on the CPU too
    assert [m['epoch'] for m in read_metrics(tmp_path / 'whole')] == [0, 1, 2]      # one record, not one per process
    killed = torchrun(tmp_path / 'killed', images)
    while not read_metrics(tmp_path / 'killed') and killed.poll() is None: time.sleep(0.05)
    os.killpg(killed.pid, signal.SIGKILL); killed.wait()
    done = load_checkpoint(tmp_path / 'killed' / 'last.pt')['epoch']
    assert 1 <= done < 3, done
    resumed = torchrun(tmp_path / 'killed', images)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-3000:]
    a, b = (load_checkpoint(tmp_path / r / 'last.pt')['model'] for r in ('whole', 'killed'))
    for k in a: assert torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k], k
    timeless = lambda run: [{k: v for k, v in m.items() if not k.endswith('wall_s') and k != 'images_per_s'}
                            for m in read_metrics(tmp_path / run)]
    assert timeless('whole') == timeless('killed')
