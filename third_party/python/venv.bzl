"""python_venv: a pinned virtualenv owned by Bazel, exposed as toolchain and labels.

The venv lives beside Bazel's output bases (`<output_user_root>/executorch_optimum_venvs/
<key>`), keyed by a hash of interpreter, lock file and creation script. Every clone of the
repository therefore shares one venv and one interpreter path, so Python actions hit
local and remote caches across clones; a changed lock file gives a new key and a new venv.
EO_VENV_ROOT moves the venvs elsewhere; EO_PYTHON picks the base interpreter.
"""

_PY_INFO = """
import json, os, sys, sysconfig
print(json.dumps({
    "exe": os.path.realpath(sys.executable),
    "version": "%d.%d" % sys.version_info[:2],
    "include": sysconfig.get_paths()["include"],
}))
"""

_SITE = "lib/python{version}/site-packages"

def _normalize(name):
    return name.lower().replace("-", "_").replace(".", "_")

def _pinned_packages(lock_text):
    names = []
    for line in lock_text.splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        names.append(_normalize(line.split("==")[0].split("[")[0].strip()))
    return names

def _run(rctx, args, what, timeout = 120, quiet = True):
    result = rctx.execute(args, timeout = timeout, quiet = quiet)
    if result.return_code != 0:
        fail("python_venv: {} failed ({}):\n{}{}".format(what, result.return_code, result.stdout, result.stderr))
    return result.stdout

def _python_venv_impl(rctx):
    python = rctx.os.environ.get("EO_PYTHON", "python3")
    python_path = rctx.which(python) if "/" not in python else rctx.path(python)
    if not python_path:
        fail("python_venv: no '{}' on PATH; install Python 3.11 or set EO_PYTHON".format(python))
    info = json.decode(_run(rctx, [python_path, "-c", _PY_INFO], "probing the interpreter"))

    lock = rctx.path(rctx.attr.lock)
    script = rctx.path(rctx.attr._make_venv)
    key_src = "\n".join([info["exe"], info["version"], rctx.read(lock), rctx.read(script)])
    rctx.file("key_src.txt", key_src, executable = False)
    key = _run(rctx, ["sha256sum", "key_src.txt"], "hashing the lock").split(" ")[0][:16]

    root = rctx.os.environ.get("EO_VENV_ROOT", "")
    if not root:
        root = str(rctx.path(".").dirname.dirname.dirname) + "/executorch_optimum_venvs"
    venv = "{}/py{}-{}".format(root, info["version"], key)
    rctx.report_progress("Python venv " + venv)
    _run(rctx, ["bash", script, info["exe"], lock, venv], "creating the venv", timeout = 3600, quiet = False)

    site = venv + "/" + _SITE.format(version = info["version"])
    rctx.symlink(site, "site-packages")
    rctx.symlink(info["include"], "python_include")
    rctx.file("venv_path.txt", venv + "\n")

    packages = _pinned_packages(rctx.read(lock))
    rctx.template("BUILD.bazel", rctx.attr._build_template, {
        "{INTERPRETER}": venv + "/bin/python3",
        "{PACKAGES}": repr(packages),
    })
    rctx.file("requirements.bzl", """\"\"\"Labels of the pinned Python packages.\"\"\"

PINNED = {packages}

def requirement(name):
    \"\"\"The label of pinned package `name` (pip spelling accepted).\"\"\"
    key = name.lower().replace("-", "_").replace(".", "_")
    if key not in PINNED:
        fail("'%s' is not pinned in third_party/python/requirements.lock" % name)
    return "@{repo}//:" + key
""".format(packages = repr(packages), repo = rctx.name))

python_venv = repository_rule(
    implementation = _python_venv_impl,
    attrs = {
        "lock": attr.label(allow_single_file = True, mandatory = True),
        "_make_venv": attr.label(default = "//third_party/python:make_venv.sh"),
        "_build_template": attr.label(default = "//third_party/python:venv.BUILD.tpl"),
    },
    environ = ["EO_PYTHON", "EO_VENV_ROOT"],
    # Re-run on every new Bazel server: cheap when the venv exists (a stamp check), and
    # it rebuilds a venv that somebody deleted.
    local = True,
)
