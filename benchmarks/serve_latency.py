"""Per-request latency of `gpc serve` vs calling the composer in-process, on the shipped PushT pair.

Requests alternate in-process / through the server on the same frames and noise seeds (A B, then B A, ...:
each pair's first side alternates), and the ratio is taken pair by pair, so drift in this shared machine's
speed hits both sides of a pair alike. The server runs in a background thread of this process (its event loop
and inference thread), the client is gpc.app.serve_client over loopback: the difference is msgpack, the
websocket, validation and the thread hop.

    python benchmarks/serve_latency.py [--pairs 100] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from gpc.app.cli import compose
from gpc.app.serve import build_server, running
from gpc.app.serve_client import PolicyClient


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return q1, median, q3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    server = build_server(compose("serve", ["port=0"]), "configs/serve.yaml")
    service = server.service
    server.service.warm_up()
    rng = np.random.default_rng(0)
    stream = [rng.uniform(0, 512, 20).astype(np.float32) for _ in range(args.pairs + 1)]
    local, remote, infer = [], [], []
    with running(server) as port, PolicyClient(f"ws://127.0.0.1:{port}") as client:
        client.infer({"keypoint": stream[0]})  # the server's history now holds the first frame
        for i, frame in enumerate(stream[1:]):
            history = {"keypoint": np.stack([stream[i], frame])[None]}

            def in_process():
                began = time.perf_counter()
                out = service.composer.act(history, [service.weights], [i])[0, 0].numpy()
                local.append(time.perf_counter() - began)
                return out

            def served():
                began = time.perf_counter()
                out = client.infer({"keypoint": frame}, seed=i)
                remote.append(time.perf_counter() - began)
                infer.append(out["server_timing"]["infer_ms"] / 1e3)
                return out["actions"]

            if i % 2:  # every other pair runs the server first, so neither side always goes first
                actions, expected = served(), in_process()
            else:
                expected, actions = in_process(), served()
            np.testing.assert_allclose(actions, expected, rtol=1e-6, atol=1e-4)  # the same work on both sides
    ratios = [r / a for r, a in zip(remote, local)]
    overhead = [r - a for r, a in zip(remote, local)]
    print(f"shipped PushT pair (2 parents, DDIM 10 steps), batch 1, torch threads {args.threads}, "
          f"{args.pairs} interleaved pairs")
    for name, values, scale in [("in-process composer.act", local, 1e3), ("through gpc serve", remote, 1e3),
                                ("  of which server inference", infer, 1e3), ("overhead per request", overhead, 1e3)]:
        q1, median, q3 = quartiles(values)
        print(f"  {name:30s} median {scale * median:7.2f} ms   (IQR {scale * q1:.2f} - {scale * q3:.2f})")
    q1, median, q3 = quartiles(ratios)
    print(f"  ratio served / in-process, pair by pair: median {median:.3f}  (IQR {q1:.3f} - {q3:.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
