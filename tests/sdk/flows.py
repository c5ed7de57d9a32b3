"""The Docker SDK for Python (docker 7.x) against nook's Docker API: what a test suite using the
SDK or testcontainers does. Run by tests/docker_sdk.rs as the test user with DOCKER_HOST set;
argv[1] is an image reference in a local registry to pull. Prints one line per step; any failure
raises (non-zero exit with a traceback)."""

import sys
import time
import urllib.request

import docker
from docker.errors import APIError, ImageNotFound, NotFound

REF = sys.argv[1]
IMG = "busybox:latest"
c = docker.from_env(version="auto")
assert c.ping()
print("version", c.version()["ApiVersion"])

# images.pull from the local registry, then list/get
pulled = c.images.pull(REF)
assert REF in pulled.tags, pulled.tags
assert any(REF in i.tags for i in c.images.list())
c.images.get(IMG)
try:
    c.images.get("nosuch/image:1")
    raise AssertionError("an unknown image was found")
except ImageNotFound:
    pass
print("images ok")

# containers.run in the foreground: the output, the container removed
out = c.containers.run(IMG, ["sh", "-c", "echo hi from $WHO"], environment={"WHO": "sdk"}, remove=True)
assert out == b"hi from sdk\n", out
try:
    c.containers.run(IMG, ["sh", "-c", "echo boom >&2; exit 3"], remove=True)
    raise AssertionError("a failing command did not raise")
except docker.errors.ContainerError as e:
    assert e.exit_status == 3, e
print("run ok")

# testcontainers' flow: a detached container with a random host port, labels; wait for a
# log line; find the mapped port; talk to it; exec; stop and remove
web = c.containers.run(
    IMG,
    ["sh", "-c", "busybox mkdir -p /www; echo sdk-web > /www/index.html; echo listening now; exec busybox httpd -f -p 80 -h /www"],
    detach=True,
    name="sdkweb",
    labels={"org.testcontainers": "true"},
    ports={"80/tcp": ("127.0.0.1", None)},
)
deadline = time.time() + 20
seen = b""
for chunk in web.logs(stream=True, follow=True):
    seen += chunk
    if b"listening now" in seen or time.time() > deadline:
        break
assert b"listening now" in seen, seen
web.reload()
assert web.status == "running", web.status
port = web.ports["80/tcp"][0]["HostPort"]
same = web.attrs["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]
assert port == same and int(port) > 0, (port, same)
body = None
for _ in range(50):
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=3).read()
        break
    except OSError:
        time.sleep(0.2)
assert body == b"sdk-web\n", body
r = web.exec_run(["cat", "/www/index.html"])
assert r.exit_code == 0 and r.output == b"sdk-web\n", r
r = web.exec_run(["sh", "-c", "exit 7"])
assert r.exit_code == 7, r
r = web.exec_run("sh -c 'echo $X'", environment={"X": "exec-env"})
assert r.output == b"exec-env\n", r
assert [x.name for x in c.containers.list(filters={"label": "org.testcontainers=true"})] == ["sdkweb"]
print("testcontainers flow ok, port", port)

# networks: create, connect with an alias, reach by alias, disconnect, remove
net = c.networks.create("sdknet", driver="bridge", labels={"from": "sdk"})
assert c.networks.get(net.id).name == "sdknet"
assert [n.name for n in c.networks.list(filters={"label": "from=sdk"})] == ["sdknet"]
net.connect(web, aliases=["sdkalias"])
net.reload()
assert [x.name for x in net.containers] == ["sdkweb"], net.containers
# 20 times: containers.run removes the container before it reads the logs it asked for, and
# the output written after the log stream began was lost about one time in ten
for i in range(20):
    out = c.containers.run(IMG, ["sh", "-c", "echo go; busybox wget -q -O - http://sdkalias/index.html"], network="sdknet", remove=True)
    assert out == b"go\nsdk-web\n", (i, out)
net.disconnect(web)
net.reload()
assert net.containers == [], net.containers
net.remove()
try:
    c.networks.get("sdknet")
    raise AssertionError("a removed network was found")
except NotFound:
    pass
print("networks ok")

# volumes: create, mount, list, inspect, remove, prune
vol = c.volumes.create("sdkvol", labels={"from": "sdk"})
assert c.volumes.get("sdkvol").attrs["Labels"] == {"from": "sdk"}
c.containers.run(IMG, ["sh", "-c", "echo kept > /v/f"], volumes={"sdkvol": {"bind": "/v", "mode": "rw"}}, remove=True)
out = c.containers.run(IMG, ["cat", "/v/f"], volumes=["sdkvol:/v:ro"], remove=True)
assert out == b"kept\n", out
assert [v.name for v in c.volumes.list(filters={"label": "from=sdk"})] == ["sdkvol"]
vol.remove()
c.volumes.create("sdkvol2")
pruned = c.volumes.prune(filters={"all": "true"})
assert "sdkvol2" in (pruned.get("VolumesDeleted") or []), pruned
assert c.volumes.list() == []
print("volumes ok")

# removal
web.stop(timeout=1)
web.reload()
assert web.status == "exited", web.status
web.remove()
try:
    c.containers.get("sdkweb")
    raise AssertionError("a removed container was found")
except NotFound:
    pass
assert c.containers.list(all=True) == []
try:
    c.containers.create(IMG, "true", mac_address="02:42:ac:11:00:02")
    raise AssertionError("an unsupported option was accepted")
except APIError as e:
    assert "MacAddress" in str(e), e
print("SDK OK")
