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

from hackathon.core.errors import Refused
from hackathon.deploy.export import CLASSES, INT8_PARAMS, INT8_SYMBOL, META, PARAMS, SYMBOL, check_meta

MX_NDARRAY_LIST_MAGIC = 0x112  # first 8 bytes of an mx.nd.save file (kMXAPINDArrayListMagic)
# Registered operators that call back into Python (mx.operator.CustomOp, autograd.Function).
PYTHON_OPERATORS = {"Custom", "_CustomFunction"}


def check_export(files):
    """Check an exported model's files without running anything: the symbol is a graph with the
    ``data`` input and three outputs, the params file is mxnet's NDArray list (not a pickle), the
    class list and export.json are sane. The model itself only ever runs in a child process."""
    check_graph(files[SYMBOL], files[PARAMS])
    classes = check_classes(files[CLASSES])
    meta = _read_json(files[META], 1) if META in files else {}
    if META in files:
        check_export_json(meta, classes)
    int8 = [n for n in (INT8_SYMBOL, INT8_PARAMS) if n in files]
    if int8 or (isinstance(meta, dict) and meta.get("int8")):
        if len(int8) != 2 or not isinstance(meta.get("int8"), dict) or \
                (meta["int8"].get("symbol"), meta["int8"].get("params")) != (INT8_SYMBOL, INT8_PARAMS):
            raise Refused(f"an INT8 graph needs {INT8_SYMBOL}, {INT8_PARAMS} and export.json's int8 entry naming them, "
                          "as `hack export --int8` writes them; send all three or none.")
        check_graph(files[INT8_SYMBOL], files[INT8_PARAMS])  # MXNet's own (quantized) operators only
    return classes


def check_graph(symbol_path, params_path):
    """A symbol file that is an MXNet graph with the ``data`` input, three outputs and only
    operators this MXNet registers (its quantized ones included, never Python's), and its params."""
    sname, pname = symbol_path.name, params_path.name
    graph = _read_json(symbol_path, 64)
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and isinstance(n.get("op"), str)
                                              and isinstance(n.get("name"), str) for n in nodes):
        raise Refused(f"{sname} is not an MXNet symbol graph (no 'nodes' list of operators); "
                      "write it with `hack export` (net.export).")
    inputs = [n["name"] for n in nodes if n["op"] == "null"]
    if "data" not in inputs:
        raise Refused(f"{sname} has no input named 'data'; export the hybridized net with net.export.")
    heads = graph.get("heads")
    if not isinstance(heads, list) or len(heads) != 3:
        raise Refused(f"{sname} has {len(heads) if isinstance(heads, list) else 'no'} outputs, "
                      "not the 3 of a GluonCV SSD in inference mode (ids, scores, boxes); export after net.hybridize().")
    custom = sorted({n["op"] for n in nodes} & PYTHON_OPERATORS)
    if custom:
        raise Refused(f"{sname} calls Python code ({', '.join(custom)} operator); the judges never run "
                      "team code: export a net made of MXNet operators only (the kit's SSD is).")
    unknown = sorted({n["op"] for n in nodes} - _mx_operators() - {"null"})
    if unknown:
        raise Refused(f"{sname} uses operators MXNet 1.9.1 does not have ({', '.join(unknown[:5])}); "
                      "export with the kit's mxnet.")
    with open(params_path, "rb") as f:
        head = f.read(16)
    if len(head) < 16 or struct.unpack("<Q", head[:8])[0] != MX_NDARRAY_LIST_MAGIC:
        kind = " (it looks like a pickle)" if head[:1] == b"\x80" else (" (it looks like a zip/torch file)"
                                                                     if head[:2] == b"PK" else "")
        raise Refused(f"{pname} is not an MXNet parameter file{kind}; write it with `hack export` "
                      "(net.export), the judges never unpickle.")


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
    """export.json held to the export contract, strictly: the judges run it on their machine."""
    if not isinstance(meta, dict):
        raise Refused("export.json is not a JSON object; copy it from `hack export` or leave it out.")
    try:
        check_meta(meta, classes, strict=True)
    except ValueError as e:
        raise Refused(f"export.json: {e}; export again so both files come from one `hack export`.") from None


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
