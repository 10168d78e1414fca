"""`gpc serve` on loopback with the shipped PushT pair: openpi's wire format, actions equal to the composer's
in-process, per-connection history and noise, clear errors on bad requests, and a server that outlives bad
clients. openpi's own client is exercised where GPC_OPENPI_PYTHON names a Python that has openpi-client."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from websockets.sync.client import connect

from gpc.app.cli import compose
from gpc.app.cli import main as gpc_main
from gpc.app.serve import Input, PolicyServer, RequestError, build_server, check_frame, running
from gpc.app.serve_client import PolicyClient, ServeError
from gpc.app.wire import WireError, packb, unpackb

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 64 << 10


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 512, 20).astype(np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def server():
    return build_server(compose("serve", ["port=0", f"max_message_bytes={MAX_BYTES}"]), "test")


@pytest.fixture(scope="module")
def uri(server):
    with running(server) as port:
        yield f"ws://127.0.0.1:{port}"


@pytest.fixture
def client(uri):
    with PolicyClient(uri) as c:
        yield c


def in_process(server, history, seed, weights=None):
    """The composer's own answer for an observation history (oldest first, n_obs_steps frames)."""
    service = server.service
    obs = {"keypoint": np.stack(history)[None]}
    return service.composer.act(obs, [service.schedule(weights)], [seed])[0, 0].numpy()


def test_wire_format_is_openpis_msgpack_numpy_and_refuses_what_it_cannot_read():
    raw = msgpack.unpackb(packb({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.int64(3)}))
    assert raw["a"] == {b"__ndarray__": True, b"data": np.arange(6, dtype=np.float32).tobytes(), b"dtype": "<f4",
                        b"shape": [2, 3]}
    assert raw["s"] == {b"__npgeneric__": True, b"data": 3, b"dtype": "<i8"}
    back = unpackb(packb({"a": np.eye(2), "t": "x"}))
    assert back["a"].dtype == np.float64 and np.array_equal(back["a"], np.eye(2)) and back["t"] == "x"
    for bad, reason in [({b"__ndarray__": True, b"data": b"abcd", b"dtype": "|O", b"shape": [1]}, "dtype"),
                        ({b"__ndarray__": True, b"data": b"abc", b"dtype": "<f4", b"shape": [1]}, "needs 4 bytes"),
                        ({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [-1]}, "non-negative")]:
        with pytest.raises(WireError, match=reason):
            unpackb(msgpack.packb(bad))
    with pytest.raises(WireError, match="not a msgpack message"):
        unpackb(b"\xc1 junk")
    with pytest.raises(WireError, match="not a msgpack message"):
        unpackb(b"\x91" * 100_000)  # nested beyond msgpack's stack


def test_frame_checks_follow_each_input_type():
    rgb, cloud, text = Input("cam", "rgb", (3, 4, 5)), Input("pc", "pointcloud", (6, 3)), Input("t", "language", ())
    assert check_frame(rgb, np.zeros((4, 5, 3), np.uint8)).shape == (4, 5, 3)  # a camera frame
    assert check_frame(rgb, np.zeros((3, 4, 5), np.float32)).shape == (3, 4, 5)  # already the parent's layout
    with pytest.raises(RequestError, match=r"shape \(4, 5, 3\) \(uint8\)"):
        check_frame(rgb, np.zeros((4, 5, 3), np.float32))
    assert check_frame(cloud, np.ones((6, 6))).shape == (6, 3)  # xyz kept, rgb dropped as the parent does
    with pytest.raises(RequestError, match="shape"):
        check_frame(cloud, np.ones((5, 3)))
    with pytest.raises(RequestError, match="non-finite"):
        check_frame(cloud, np.full((6, 3), np.inf))
    assert check_frame(text, "push the T") == "push the T"
    with pytest.raises(RequestError, match="string"):
        check_frame(text, np.zeros(3))


def test_metadata_on_connect_describes_the_composition(client):
    meta = client.metadata
    assert meta["server"] == "gpc" and meta["parents"] == ["state_diffusion", "keypoint_flow"]
    assert meta["observation"] == {"keypoint": {"type": "low_dim", "shape": [20], "dtype": "float32"}}
    assert (meta["n_obs_steps"], meta["n_action_steps"], meta["action_dim"]) == (2, 8, 2)
    assert meta["weights"] == [0.5, 0.5] and meta["operator"] == "convex"


def test_actions_are_the_composers_on_the_connections_history(server, client):
    f = frames(3)
    answers = [client.infer({"keypoint": x}, seed=11 + i) for i, x in enumerate(f)]
    for a in answers:
        assert a["actions"].shape == (8, 2) and a["actions"].dtype == np.float32
    assert [a["step"] for a in answers] == [0, 1, 2] and [a["seed"] for a in answers] == [11, 12, 13]
    assert answers[0]["server_timing"]["infer_ms"] > 0
    # the first frame is repeated to fill the history, then the last two frames are used
    expected = [in_process(server, [f[0], f[0]], 11), in_process(server, [f[0], f[1]], 12),
                in_process(server, [f[1], f[2]], 13)]
    for a, e in zip(answers, expected):
        np.testing.assert_allclose(a["actions"], e, rtol=1e-6, atol=1e-4)
    assert not np.allclose(in_process(server, [f[1], f[1]], 12), expected[1], atol=1e-2)  # the history matters


def test_noise_is_seeded_by_connection_episode_and_step_so_a_rerun_repeats(uri):
    f = frames(2, seed=1)

    def episode_run():
        with PolicyClient(uri) as c:
            first = [c.infer({"keypoint": x}) for x in f]
            c.reset()
            again = c.infer({"keypoint": f[0]})
            return first, again

    (a0, a1), after_reset = episode_run()
    (b0, b1), _ = episode_run()
    assert [a0["seed"], a1["seed"]] == [b0["seed"], b1["seed"]] and a0["seed"] != a1["seed"]
    np.testing.assert_array_equal(a0["actions"], b0["actions"])
    np.testing.assert_array_equal(a1["actions"], b1["actions"])
    # after a reset: step 0 of a new episode, fresh history, new noise
    assert after_reset["step"] == 0 and after_reset["seed"] not in (a0["seed"], a1["seed"])
    with PolicyClient(uri) as c:
        fresh = c.infer({"keypoint": f[0]}, seed=after_reset["seed"])
    np.testing.assert_array_equal(after_reset["actions"], fresh["actions"])


def test_reset_in_a_request_starts_the_episode_at_that_frame(server, client):
    f = frames(2, seed=2)
    client.infer({"keypoint": f[0]})
    answer = client.infer({"keypoint": f[1]}, seed=5, reset=True)
    assert answer["step"] == 0
    np.testing.assert_allclose(answer["actions"], in_process(server, [f[1], f[1]], 5), rtol=1e-6, atol=1e-4)


def test_weights_switch_per_request_and_are_validated(server, client):
    x = frames(1, seed=3)[0]
    only_first = client.infer({"keypoint": x}, weights=[1.0, 0.0], seed=9, reset=True)["actions"]
    only_second = client.infer({"keypoint": x}, weights=np.array([0.0, 1.0]), seed=9, reset=True)["actions"]
    default = client.infer({"keypoint": x}, seed=9, reset=True)["actions"]
    np.testing.assert_allclose(only_first, in_process(server, [x, x], 9, [1.0, 0.0]), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(only_second, in_process(server, [x, x], 9, [0.0, 1.0]), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(default, in_process(server, [x, x], 9, [0.5, 0.5]), rtol=1e-6, atol=1e-4)
    assert not np.allclose(only_first, only_second, atol=1e-2)
    schedule = {"knots": [0.0, 1.0], "weights": [[1.0, 0.0], [0.0, 1.0]]}
    assert client.infer({"keypoint": x}, weights=schedule)["actions"].shape == (8, 2)


GOOD = frames(1, seed=4)[0]
MALFORMED = [
    ({}, "missing observation keys ['keypoint']"),
    ({"keypoint": GOOD[:5]}, "keypoint: need one frame of shape (20,)"),
    ({"keypoint": GOOD.reshape(4, 5)}, "got a float32 array of shape (4, 5)"),
    ({"keypoint": "twenty numbers"}, "need a numeric array"),
    ({"keypoint": GOOD.astype(bool)}, "need a numeric array"),
    ({"keypoint": np.where(np.arange(20) == 3, np.nan, GOOD)}, "non-finite"),
    ({"keypoint": np.where(np.arange(20) == 3, np.inf, GOOD)}, "non-finite"),
    ({"keypoint": GOOD, "weights": [0.7, 0.7]}, "sum to 1"),
    ({"keypoint": GOOD, "weights": [1.0]}, "1 weights for 2 parents"),
    ({"keypoint": GOOD, "weights": [[0.5, 0.5], [1.0, 0.0]]}, "one weight vector or schedule per request"),
    ({"keypoint": GOOD, "weights": "half"}, "weights"),
    ({"keypoint": GOOD, "seed": -3}, "seed: need an integer"),
    ({"keypoint": GOOD, "reset": "yes"}, "reset: need true or false"),
    ({"keypoint": GOOD, "keypiont": GOOD}, "unknown keys"),
    ([GOOD], "need a map of observation keys"),
]


@pytest.mark.parametrize("request_, reason", MALFORMED, ids=[reason for _, reason in MALFORMED])
def test_a_malformed_request_gets_a_clear_error_and_the_connection_keeps_serving(server, client, request_, reason):
    x = frames(2, seed=5)
    before = client.infer({"keypoint": x[0]}, seed=1, reset=True)
    client._ws.send(packb(request_))
    answer = client._ws.recv()
    assert isinstance(answer, str) and answer.startswith("gpc serve: bad request: ")
    assert reason in answer, answer
    after = client.infer({"keypoint": x[1]}, seed=2)
    assert (before["step"], after["step"]) == (0, 1)  # the bad request left the history as it was
    np.testing.assert_allclose(after["actions"], in_process(server, [x[0], x[1]], 2), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("junk", [b"\xc1\xc1 not msgpack", b"\x91" * 50_000, "a text frame",
                                  msgpack.packb({"keypoint": {b"__ndarray__": True, b"data": b"xx",
                                                              b"dtype": "|O", b"shape": [2]}})])
def test_undecodable_messages_get_an_error_and_the_connection_keeps_serving(client, junk):
    client._ws.send(junk)
    answer = client._ws.recv()
    assert isinstance(answer, str) and answer.startswith("gpc serve: bad request: "), answer
    assert client.infer({"keypoint": GOOD})["actions"].shape == (8, 2)


def test_two_clients_at_once_each_keep_their_own_history(server, uri):
    streams = {0: frames(3, seed=10), 1: frames(3, seed=20)}
    answers, barrier = {}, threading.Barrier(2)

    def robot(i):
        with PolicyClient(uri) as c:
            barrier.wait()
            answers[i] = [c.infer({"keypoint": x}, seed=100 + j) for j, x in enumerate(streams[i])]

    threads = [threading.Thread(target=robot, args=(i,)) for i in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i, f in streams.items():
        histories = [[f[0], f[0]], [f[0], f[1]], [f[1], f[2]]]
        for j, (answer, history) in enumerate(zip(answers[i], histories)):
            np.testing.assert_allclose(answer["actions"], in_process(server, history, 100 + j), rtol=1e-6, atol=1e-4)


def test_a_token_is_required_when_set_and_a_wrong_one_is_refused(server):
    guarded = PolicyServer(server.service, port=0, token="s3cret")
    with running(guarded) as port:
        uri = f"ws://127.0.0.1:{port}"
        for token in (None, "guess"):
            with pytest.raises(ServeError, match="HTTP 401.*missing or wrong token"):
                PolicyClient(uri, token=token)
        with PolicyClient(uri, token="s3cret") as c:
            assert c.infer({"keypoint": GOOD})["actions"].shape == (8, 2)


def test_connections_beyond_the_limit_are_turned_away_until_one_closes(server):
    small = PolicyServer(server.service, port=0, max_connections=1)
    with running(small) as port:
        uri = f"ws://127.0.0.1:{port}"
        with PolicyClient(uri):
            with pytest.raises(ServeError, match="server full: 1 connections"):
                PolicyClient(uri)
        wait_until(lambda: small.connections == 0)
        with PolicyClient(uri) as c:
            assert c.infer({"keypoint": GOOD})["actions"].shape == (8, 2)


def wait_until(condition, timeout=30.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_bad_clients_do_not_stop_the_server(server, uri):
    port = int(uri.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as raw:  # not even HTTP
        raw.sendall(os.urandom(4096))
        raw.settimeout(10)
        try:
            raw.recv(1024)
        except (ConnectionResetError, socket.timeout):
            pass
    with PolicyClient(uri) as c:  # a websocket that then sends frames that are not websocket frames
        c._ws.socket.sendall(b"\xff\x00\x13junk that is no frame")
        with pytest.raises(ServeError, match="closed"):
            c._receive()
    with connect(uri, compression=None) as ws:  # gone before its answer is sent
        ws.recv()
        ws.send(packb({"keypoint": GOOD}))
    with PolicyClient(uri) as c:  # a request over max_message_bytes closes that connection only
        with pytest.raises(ServeError, match="1009"):
            c.infer({"keypoint": np.zeros(MAX_BYTES, np.float32)})
    wait_until(lambda: server.connections == 0)
    with PolicyClient(uri) as c:
        assert c.infer({"keypoint": GOOD})["actions"].shape == (8, 2)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_gpc_serve_command_serves_until_stopped(tmp_path, stop):
    proc = subprocess.Popen([sys.executable, "-m", "gpc.app.cli", "serve", "port=0", "torch_threads=1"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "on ws://127.0.0.1:" in line, line + proc.stderr.read()
        uri = line.split(" on ", 1)[1].split(";")[0]
        with PolicyClient(uri) as c:
            assert c.metadata["parents"] == ["state_diffusion", "keypoint_flow"]
            assert c.infer({"keypoint": GOOD})["actions"].shape == (8, 2)
        proc.send_signal(stop)
        assert proc.wait(timeout=60) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("override, message", [
    ("weights=[[0.5,0.5],[1.0,0.0]]", "weights: serve one weight vector or schedule"),
    ("port=70000", "port: need an integer >= 0 and <= 65535, got 70000"),
    ("max_message_bytes=10", "max_message_bytes"),
])
def test_gpc_serve_refuses_a_bad_config_in_one_line(capsys, override, message):
    assert gpc_main(["serve", override]) == 2
    out, err = capsys.readouterr()
    assert message in err and len(err.strip().splitlines()) == 1 and not out, err


def test_openpis_own_client_against_gpc_serve(server):
    """openpi-client pins numpy<2, so it runs in its own environment: GPC_OPENPI_PYTHON=<python with
    openpi-client> (`pip install openpi-client==0.1.2` in a fresh venv)."""
    python = os.environ.get("GPC_OPENPI_PYTHON")
    if not python:
        pytest.skip("GPC_OPENPI_PYTHON is not set (a Python with openpi-client installed)")
    guarded = PolicyServer(server.service, port=0, token="k3y")
    with running(guarded) as port:
        result = subprocess.run([python, str(Path(__file__).with_name("openpi_exchange.py")), str(port), "k3y"],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    frame = np.asarray(seen["frame"], np.float32)
    assert seen["metadata"]["observation"]["keypoint"]["shape"] == [20]
    expected = in_process(server, [frame, frame], 7)
    np.testing.assert_allclose(seen["actions"], expected, rtol=1e-6, atol=1e-4)
    assert "gpc serve: bad request: keypoint: need one frame of shape (20,)" in seen["error"]
    np.testing.assert_allclose(seen["actions_after_error"], expected, rtol=1e-6, atol=1e-4)
    assert seen["broker_action"] == pytest.approx(expected[0].tolist(), rel=1e-6, abs=1e-4)
    assert "401" in seen["refused"]
