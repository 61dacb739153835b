"""Each isolation layer on its own (the hostile-reply tests exercise them together)."""

import os
import socket

import pytest

from evaluation.sandbox.linux import cgroups, creds, landlock, namespaces, seccomp


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
        namespaces.unshare(namespaces.CLONE_NEWNET)
        try:
            socket.create_connection(("127.0.0.1", listener), timeout=2)
        except OSError:
            return 0
        return 1

    if os.geteuid() != 0:
        pytest.skip("needs root (CAP_SYS_ADMIN) for unshare(CLONE_NEWNET)")
    assert _in_child(child) == 0


def test_landlock_alone_blocks_writes_and_tcp(tmp_path, listener):
    if landlock.landlock_abi() < 1:
        pytest.skip("Landlock not available on this kernel")
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()

    def child():
        landlock.landlock_restrict([str(inside)])
        (inside / "ok.txt").write_text("fine")
        try:
            (outside / "no.txt").write_text("bad")
            return 1
        except PermissionError:
            pass
        if landlock.landlock_abi() >= 4:
            try:
                socket.create_connection(("127.0.0.1", listener), timeout=2)
                return 2
            except PermissionError:
                pass
        return 0

    assert _in_child(child) == 0
    assert (inside / "ok.txt").exists() and not (outside / "no.txt").exists()


def test_pids_cgroup_bounds_root_forks():
    if os.geteuid() != 0 or "pids" not in cgroups.cgroup_parents()[1]:
        pytest.skip("needs root and the pids controller")
    group = cgroups.create_slot_cgroup(f"qm-test-{os.getpid()}", memory_bytes=None, cpus=None, max_pids=5,
                                       controllers=("pids",))
    path = group.dirs["pids"]

    def child():
        cgroups.join_cgroup(path)
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
        cgroups.remove_cgroup(path)


def test_seccomp_alone_denies_metadata_and_socket_families(tmp_path):
    """As root, with no other layer: the filter alone makes chmod/utime/xattr/chown and unix, netlink,
    packet and vsock sockets fail (EPERM / EACCES, so Python raises), and leaves the rest working."""
    if os.uname().machine not in seccomp.SYSCALLS:
        pytest.skip(f"no syscall table for {os.uname().machine}")
    target = tmp_path / "f.txt"
    target.write_text("x")
    target.chmod(0o644)
    os.utime(target, (1_000_000_000, 1_000_000_000))
    before = target.stat()

    def child():
        import threading

        seccomp.seccomp_restrict()
        for call in (lambda: os.chmod(target, 0o4777), lambda: os.utime(target, (0, 0)),
                     lambda: os.chown(target, 65534, 65534), lambda: os.setxattr(target, "user.x", b"1")):
            try:
                call()
                return 1
            except PermissionError:
                pass
        for fam in (socket.AF_UNIX, socket.AF_NETLINK, socket.AF_PACKET, socket.AF_VSOCK):
            try:
                socket.socket(fam, socket.SOCK_DGRAM if fam != socket.AF_VSOCK else socket.SOCK_STREAM).close()
                return 2
            except PermissionError:
                pass
        try:
            namespaces.unshare(0x10000000)  # CLONE_NEWUSER: would work for any uid without the filter
            return 3
        except OSError:
            pass
        if os.uname().machine == "x86_64":  # chmod through the x32 syscall table must not slip past
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            if libc.syscall(ctypes.c_long(0x40000000 | 90), str(target).encode(), ctypes.c_long(0o4777)) != -1:
                return 5
        a, b = socket.socketpair()  # what stays allowed: socketpair, inet sockets, fork, threads, writes
        a.close(), b.close()
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
        (tmp_path / "new.txt").write_text("ok")
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        return 0 if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7 else 4

    assert _in_child(child) == 0
    after = target.stat()
    assert (after.st_mode, after.st_mtime_ns, after.st_uid) == (before.st_mode, before.st_mtime_ns, before.st_uid)
    assert (tmp_path / "new.txt").read_text() == "ok"


def test_seccomp_program_refuses_unknown_architecture():
    with pytest.raises(OSError):
        seccomp.seccomp_program("riscv64")


def test_minimal_root_holds_only_what_was_bound(tmp_path):
    """After build_root + pivot_root, a host path that was not bound does not exist; a bound one does
    (read-only); /dev holds only null, zero, random, urandom (and the fd links)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for mount namespaces")
    import sys

    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "a.txt").write_text("a")
    secret = tmp_path / "other.txt"
    secret.write_text("not bound")
    new_root = tmp_path / "root"
    new_root.mkdir()

    def child():
        namespaces.unshare(namespaces.CLONE_NEWNS)
        namespaces.make_mounts_private()
        plan = namespaces.plan_root([str(keep), "/usr", "/bin", sys.prefix, sys.base_prefix])
        namespaces.build_root(str(new_root), plan)
        namespaces.pivot_root(str(new_root))
        if os.path.exists(str(secret)) or os.path.exists("/etc/shadow") or os.path.exists("/root/.bashrc"):
            return 1
        if (keep / "a.txt").read_text() != "a" or not os.path.exists("/bin/sh"):
            return 2
        try:
            (keep / "b.txt").write_text("b")
            return 3
        except OSError:
            pass
        if not set(os.listdir("/dev")) <= {"null", "zero", "random", "urandom", "fd", "stdin", "stdout", "stderr"}:
            return 4
        with open("/dev/null", "w") as fh:
            fh.write("x")
        return 0 if len(open("/dev/urandom", "rb").read(8)) == 8 else 5

    assert _in_child(child) == 0
    assert not (keep / "b.txt").exists()


def test_judge_proc_hides_host_processes_from_the_sandbox_uid():
    """The judge keeps a procfs of the host's PID namespace; once it has dropped to the sandbox uid,
    other uids' processes (a holder of an API key in its argv) are invisible there (hidepid=2)."""
    if os.geteuid() != 0:
        pytest.skip("needs root for mount namespaces and the uid drop")
    import subprocess

    import shutil
    import tempfile
    from pathlib import Path

    holder = subprocess.Popen(["sleep", "60"])
    proc = Path(tempfile.mkdtemp(prefix="qm-proc-"))  # directly in /tmp: the uid can reach the mount

    def child():
        namespaces.unshare(namespaces.CLONE_NEWNS)
        namespaces.make_mounts_private()
        namespaces.mount_proc_at(str(proc))
        if not (proc / str(holder.pid)).exists():
            return 1  # root still sees it: the mount is a real host-namespace procfs
        creds.drop_privileges(61000)
        return 0 if not (proc / str(holder.pid)).exists() and (proc / "self" / "statm").exists() else 2

    try:
        assert _in_child(child) == 0
    finally:
        holder.kill()
        holder.wait()
        shutil.rmtree(proc, ignore_errors=True)


def test_slot_cgroup_kill_all_reaches_detached_processes():
    """The server's last sweep: every task of a slot's cgroup is killed, also a setsid() grandchild
    whose parent is gone (no process group or parent-death signal reaches it)."""
    if os.geteuid() != 0 or "pids" not in cgroups.cgroup_parents()[1]:
        pytest.skip("needs root and a pids cgroup")
    import time

    group = cgroups.create_slot_cgroup(f"qm-test-kill-{os.getpid()}", memory_bytes=None, cpus=None, max_pids=16,
                                         controllers=("pids",))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        cgroups.join_cgroup(group.dirs["pids"])
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.write(w, str(os.getpid()).encode())
                time.sleep(60)
            os._exit(0)
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    grandchild = int(os.read(r, 32))
    os.close(r)
    try:
        assert os.path.exists(f"/proc/{grandchild}")
        group.kill_all()
        time.sleep(0.2)
        with open(os.path.join(group.dirs["pids"], "cgroup.procs")) as fh:
            assert fh.read().split() == []
        status = open(f"/proc/{grandchild}/status").read() if os.path.exists(f"/proc/{grandchild}") else "gone"
        assert status == "gone" or "State:\tZ" in status
    finally:
        group.kill_all()
        group.remove()


# --- the seccomp program, run by a small classic-BPF interpreter against the kernel headers' numbers

_HEADERS = {"x86_64": "/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "aarch64": "/usr/include/asm-generic/unistd.h"}


def _header_numbers(arch: str) -> dict[str, int]:
    import re

    text = open(_HEADERS[arch]).read()
    nums = {m.group(1): int(m.group(2)) for m in re.finditer(r"#define __NR_(\w+)\s+(\d+)", text)}
    for name, alias in re.findall(r"#define __NR_(\w+)\s+__NR3264_(\w+)", text):  # asm-generic's 64-bit aliases
        m = re.search(rf"#define __NR3264_{alias}\s+(\d+)", text)
        if m:
            nums[name] = int(m.group(1))
    return nums


def _run_bpf(prog: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    import struct

    data = struct.pack("=iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    insns = [struct.unpack_from("=HBBI", prog, i) for i in range(0, len(prog), 8)]
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            acc = struct.unpack_from("=I", data, k)[0]
            pc += 1
        elif code in (0x15, 0x45, 0x35):
            hit = acc == k if code == 0x15 else bool(acc & k) if code == 0x45 else acc >= k
            pc += 1 + (jt if hit else jf)
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"unexpected BPF opcode {code:#x}")


@pytest.mark.parametrize("arch, audit", [("x86_64", 0xC000003E), ("aarch64", 0xC00000B7)])
def test_seccomp_program_decisions_for_each_architecture(arch, audit):
    if not os.path.exists(_HEADERS[arch]):
        pytest.skip(f"no kernel header for {arch} to take the syscall numbers from")
    nr = _header_numbers(arch)
    prog = seccomp.seccomp_program(arch)
    allow, eperm, eacces, enosys = 0x7FFF0000, 0x00050001, 0x0005000D, 0x00050026
    denied = ["fchmod", "fchmodat", "fchownat", "fchown", "utimensat", "setxattr", "fsetxattr", "lremovexattr",
              "keyctl", "ptrace", "io_uring_setup", "unshare", "mount", "bpf"]
    if arch == "x86_64":
        denied += ["chmod", "chown", "lchown", "utime", "utimes", "futimesat"]
    for name in denied:
        assert _run_bpf(prog, nr[name], audit) == eperm, name
    for name in ("read", "write", "openat", "mmap", "execve", "socketpair", "wait4"):
        assert _run_bpf(prog, nr[name], audit) == allow, name
    for fam, verdict in ((1, eacces), (16, eacces), (17, eacces), (40, eacces), (2, allow), (10, allow)):
        assert _run_bpf(prog, nr["socket"], audit, (fam, 1, 0)) == verdict, fam
    assert _run_bpf(prog, nr["clone"], audit, (17,)) == allow                    # fork(): SIGCHLD only
    assert _run_bpf(prog, nr["clone"], audit, (0x003D0F00,)) == allow            # pthread_create's flags
    assert _run_bpf(prog, nr["clone"], audit, (0x10000000 | 17,)) == eperm       # CLONE_NEWUSER
    assert _run_bpf(prog, 435, audit) == enosys                                  # clone3
    assert _run_bpf(prog, nr["read"], 0x40000003) == eperm                       # i386 calling convention
    if arch == "x86_64":
        assert _run_bpf(prog, 0x40000000 | nr["chmod"], audit) == eperm          # x32 table
