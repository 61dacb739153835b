"""Each isolation layer on its own (the hostile-reply tests exercise them together)."""

import os
import socket

import pytest

from evaluation import isolation


def _in_child(fn) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            code = fn()
        except BaseException:  # noqa: BLE001
            code = 99
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture()
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


def test_network_namespace_alone_blocks_loopback(listener):
    def child():
        isolation.unshare(isolation.CLONE_NEWNET)
        try:
            socket.create_connection(("127.0.0.1", listener), timeout=2)
        except OSError:
            return 0
        return 1

    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_SYS_ADMIN) for unshare(CLONE_NEWNET)")
    assert _in_child(child) == 0


def test_landlock_alone_blocks_writes_and_tcp(tmp_path, listener):
    if isolation.landlock_abi() < 1:
        pytest.skip("Landlock not available on this kernel")
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()

    def child():
        isolation.landlock_restrict([str(inside)])
        (inside / "ok.txt").write_text("fine")
        try:
            (outside / "no.txt").write_text("bad")
            return 1
        except PermissionError:
            pass
        if isolation.landlock_abi() >= 4:
            try:
                socket.create_connection(("127.0.0.1", listener), timeout=2)
                return 2
            except PermissionError:
                pass
        return 0

    assert _in_child(child) == 0
    assert (inside / "ok.txt").exists() and not (outside / "no.txt").exists()


def test_pids_cgroup_bounds_root_forks():
    if os.geteuid() != 0 or not os.path.isdir(isolation.PIDS_CGROUP_ROOT):
        pytest.skip("needs root and the cgroup-v1 pids controller")
    path = isolation.create_pids_cgroup(f"qm-test-{os.getpid()}", 5)

    def child():
        isolation.join_cgroup(path)
        kids = []
        try:
            for _ in range(20):
                pid = os.fork()
                if pid == 0:
                    import time
                    time.sleep(30)
                    os._exit(0)
                kids.append(pid)
        except OSError:
            pass
        for k in kids:
            os.kill(k, 9)
            os.waitpid(k, 0)
        return len(kids)

    try:
        assert _in_child(child) == 4  # 5 pids: this child + 4 forks
    finally:
        isolation.remove_cgroup(path)
