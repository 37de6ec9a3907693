"""A data-parallel fit under torchrun, checked: run as

    torchrun --standalone --nproc_per_node=2 benches/ddp_check.py [--epochs 2] [--images 24]

Backend: NCCL with one GPU per rank when torch sees at least as many GPUs as there are ranks on
this node; otherwise gloo on the CPUs (two ranks cannot share one GPU under NCCL). It prints what
it chose. Rank 0 writes synthetic PNGs into a temporary folder the ranks share; every rank fits
the same small FingerprintClassifier (random init), recording which sample ids its training
batches held. Checks: in each epoch the ranks' samples are disjoint and cover the training set;
the ranks end with identical weights (a digest of the state dict) and identical histories.
Prints one line starting with PASS or FAIL; the exit code is 0 or 1 on every rank.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
import torch.distributed as dist

import ctfp
from ctfp.data.stream import BatchStream
from ctfp.data.synthetic import write_pngs


def record_training_batches() -> list:
    """Record the sample ids of each batch a shuffled (training) stream yields, per epoch."""
    seen: list = []
    original = BatchStream.iter_epoch

    def iter_epoch(self, epoch):
        if self.shuffle:
            seen.append((epoch, [int(i) for b in self._batches(epoch) for i in b]))
        return original(self, epoch)

    BatchStream.iter_epoch = iter_epoch
    return seen


def state_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=8, help="the global batch")
    ap.add_argument("--image-size", type=int, default=64)
    args = ap.parse_args()

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_gpus >= local_world:
        device, backend = "cuda", "nccl"
        torch.cuda.set_device(local_rank)
    else:
        device, backend = "cpu", "gloo"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    dist.init_process_group(backend)  # ctfp joins the group it finds
    if rank == 0:
        why = f"{n_gpus} GPU(s) for {local_world} rank(s) on this node"
        print(f"ddp_check: world {world}, backend {backend}, device {device} ({why})", flush=True)

    box = [tempfile.mkdtemp(prefix="ctfp-ddp-") if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    folder = box[0]
    try:
        if rank == 0:
            real = write_pngs(os.path.join(folder, "real"), args.images // 2, size=96, seed=1)
            gen = write_pngs(
                os.path.join(folder, "gen"), args.images - args.images // 2, size=96, seed=2
            )
            box = [(real + gen, ["real"] * len(real) + ["generated"] * len(gen))]
        else:
            box = [None]
        dist.broadcast_object_list(box, src=0)
        paths, y = box[0]
        dist.barrier()

        seen = record_training_batches()
        clf = ctfp.FingerprintClassifier(
            weights=None, image_size=args.image_size, batch_size=args.batch_size,
            max_epochs=args.epochs, validation_fraction=0.2, device=device, random_state=0,
        )  # fmt: skip
        t0 = time.perf_counter()
        clf.fit(paths, np.array(y))
        seconds = time.perf_counter() - t0

        mine = {
            "seen": seen,
            "digest": state_digest(clf.model_),
            "history": clf.history_,
            "model": type(clf.model_).__name__,
        }
        every: list = [None] * world
        dist.all_gather_object(every, mine)
        problems = []
        if rank == 0:
            n_train = len(paths) - int(np.ceil(0.2 * len(paths)))
            for epoch in range(clf.n_iter_):
                per_rank = [dict(r["seen"]).get(epoch, []) for r in every]
                ids = [i for part in per_rank for i in part]
                if len(ids) != len(set(ids)):
                    problems.append(f"epoch {epoch}: a sample was used by two ranks")
                if sorted(ids) != list(range(n_train)):
                    problems.append(
                        f"epoch {epoch}: the ranks' samples do not cover 0..{n_train - 1}"
                    )
            if len({r["digest"] for r in every}) != 1:
                problems.append("the ranks' final weights differ")
            if any(r["history"] != every[0]["history"] for r in every):
                problems.append("the ranks' histories differ")
            if any(r["model"] != "FingerprintNet" for r in every):
                problems.append("model_ is not the plain network on every rank")
            verdict = "FAIL" if problems else "PASS"
            sizes = [len(dict(r["seen"]).get(0, [])) for r in every]
            print(
                f"{verdict}: {world} ranks ({backend}, {device}), {clf.n_iter_} epochs of "
                f"{n_train} training images (epoch 1 per rank: {sizes}), shards disjoint and "
                f"covering: {not any('epoch' in p for p in problems)}, identical weights: "
                f"{len({r['digest'] for r in every}) == 1} (sha256 {every[0]['digest'][:12]}), "
                f"loss {clf.history_[-1]['loss']:.4f}, fit {seconds:.1f} s"
                + (f"; problems: {'; '.join(problems)}" if problems else ""),
                flush=True,
            )
        box = [problems]
        dist.broadcast_object_list(box, src=0)
        return 1 if box[0] else 0
    finally:
        dist.barrier()
        if rank == 0:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    code = main()
    dist.destroy_process_group()
    sys.exit(code)
