"""An exported model checked as data, before anything of it runs: hackathon/judge/submissions.py calls
:func:`check_export` on a submission's model files (already copied into the scorer's temp folder).

The symbol must be an MXNet graph with the ``data`` input, three outputs (a GluonCV SSD in
inference mode: ids, scores, boxes) and only operators this MXNet has; the params file must start
with MXNet's NDArray-list magic (a pickle or a torch zip is named as such); classes.txt and
export.json must be sane (a data_shape of 32..2048 pixels a side, three-number mean/std). Even so
the model only ever runs in a child process (hackathon/judge/sandbox.py).
"""
import json
import struct

from hackathon.judge.submissions import Refused

MX_NDARRAY_LIST_MAGIC = 0x112  # first 8 bytes of an mx.nd.save file (kMXAPINDArrayListMagic)
# Registered operators that call back into Python (mx.operator.CustomOp, autograd.Function).
PYTHON_OPERATORS = {"Custom", "_CustomFunction"}


def check_export(files):
    """Check an exported model's files without running anything: the symbol is a graph with the
    ``data`` input and three outputs, the params file is mxnet's NDArray list (not a pickle), the
    class list and export.json are sane. The model itself only ever runs in a child process."""
    graph = _read_json(files["model-symbol.json"], 64)
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and isinstance(n.get("op"), str)
                                              and isinstance(n.get("name"), str) for n in nodes):
        raise Refused("model-symbol.json is not an MXNet symbol graph (no 'nodes' list of operators); "
                      "write it with `hack export` (net.export).")
    inputs = [n["name"] for n in nodes if n["op"] == "null"]
    if "data" not in inputs:
        raise Refused("model-symbol.json has no input named 'data'; export the hybridized net with net.export.")
    heads = graph.get("heads")
    if not isinstance(heads, list) or len(heads) != 3:
        raise Refused(f"model-symbol.json has {len(heads) if isinstance(heads, list) else 'no'} outputs, "
                      "not the 3 of a GluonCV SSD in inference mode (ids, scores, boxes); export after net.hybridize().")
    custom = sorted({n["op"] for n in nodes} & PYTHON_OPERATORS)
    if custom:
        raise Refused(f"model-symbol.json calls Python code ({', '.join(custom)} operator); the judges never run "
                      "team code: export a net made of MXNet operators only (the kit's SSD is).")
    unknown = sorted({n["op"] for n in nodes} - _mx_operators() - {"null"})
    if unknown:
        raise Refused(f"model-symbol.json uses operators MXNet 1.9.1 does not have ({', '.join(unknown[:5])}); "
                      "export with the kit's mxnet.")
    with open(files["model-0000.params"], "rb") as f:
        head = f.read(16)
    if len(head) < 16 or struct.unpack("<Q", head[:8])[0] != MX_NDARRAY_LIST_MAGIC:
        kind = " (it looks like a pickle)" if head[:1] == b"\x80" else (" (it looks like a zip/torch file)"
                                                                     if head[:2] == b"PK" else "")
        raise Refused(f"model-0000.params is not an MXNet parameter file{kind}; write it with `hack export` "
                      "(net.export), the judges never unpickle.")
    classes = check_classes(files["classes.txt"])
    if "export.json" in files:
        check_export_json(_read_json(files["export.json"], 1), classes)
    return classes


def check_classes(path):
    try:
        text = path.read_bytes()[: 2**20 + 1].decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("classes.txt is not UTF-8 text; write one class name a line.") from None
    classes = [c.strip() for c in text.splitlines() if c.strip()]
    if not classes or len(text) > 2**20:
        raise Refused("classes.txt must hold one class name a line (and be small); copy it from `hack export`.")
    if len(set(classes)) != len(classes):
        raise Refused("classes.txt names a class twice; keep the order the model was trained with.")
    return classes


def check_export_json(meta, classes):
    def numbers(v, n):
        return isinstance(v, list) and len(v) == n and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) < 1e6 for x in v)

    if not isinstance(meta, dict):
        raise Refused("export.json is not a JSON object; copy it from `hack export` or leave it out.")
    shape = meta.get("data_shape", [512, 512])
    if not (numbers(shape, 2) and all(isinstance(x, int) and 32 <= x <= 2048 for x in shape)):
        raise Refused(f"export.json: data_shape {str(shape)[:40]} is not [H, W] with 32..2048 pixels each.")
    for key in ("mean", "std"):
        if key in meta and not numbers(meta[key], 3):
            raise Refused(f"export.json: {key} must be three numbers (RGB).")
    if "std" in meta and any(x <= 0 for x in meta["std"]):
        raise Refused("export.json: std must be positive.")
    if "classes" in meta and meta["classes"] != classes:
        raise Refused("export.json's classes differ from classes.txt; export again so both list the same classes.")


def _read_json(path, max_mb):
    data = path.read_bytes()
    if len(data) > max_mb * 2**20:
        raise Refused(f"{path.name} is larger than {max_mb} MB; that is not an export of an SSD.")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise Refused(f"{path.name} is not valid JSON ({str(e)[:80]}); export again.") from None


def _mx_operators():
    """Names of every operator registered in this mxnet (read from the library, nothing run)."""
    import ctypes

    from mxnet.base import _LIB, check_call, py_str

    size, names = ctypes.c_uint(), ctypes.POINTER(ctypes.c_char_p)()
    check_call(_LIB.MXListAllOpNames(ctypes.byref(size), ctypes.byref(names)))
    return {py_str(names[i]) for i in range(size.value)}
