"""Loads a SavedModel the way TF Serving does and answers one Predict request.

Run as a script in a fresh process (`python -I -S serving_client.py VERSION_DIR REQUESTS.json OUT_DIR`), never
imported: it must see only TensorFlow and TensorFlow Text, as tensorflow_model_server does. REQUESTS.json is a
list of REST-style requests, {"signature_name": ..., "inputs": {name: value}}, answered in order. It

  1. imports tensorflow and, when importable, tensorflow_text (the server links TF Text's ops);
  2. calls tensorflow::DisableXlaCompilation() through ctypes, as the server does at start, and checks it
     took effect (a jit_compile probe must fail with "XLA compilation disabled");
  3. loads with the TF1 Session loader (what the C++ SavedModelBundle does), not tf.saved_model.load;
  4. feeds the request's inputs to the signature's tensors, and inputs the request leaves out from the
     SignatureDef's defaults (what TF Serving's GetInputValues does), then writes the outputs to
     OUT_DIR/responses.json (strings decoded from UTF-8) and OUT_DIR/report.json describing what it saw.
"""

import ctypes
import importlib.util
import json
import os
import sys
import sysconfig

# Started with -S (no site module, no .pth hooks, and so no notion of the virtual environment either): the
# environment's installed-packages folders, and nothing else.
_ENV = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
sys.path.extend(
    dict.fromkeys(sysconfig.get_paths(vars={"base": _ENV, "platbase": _ENV})[key] for key in ("purelib", "platlib"))
)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

try:
    import tensorflow_text  # noqa: F401  (registers TF Text's ops, as the server links them)

    TF_TEXT = True
except ImportError:
    TF_TEXT = False

TAGS = ["serve"]
XLA_FUNCTION = "DisableXlaCompilation"  # tensorflow::DisableXlaCompilation(), exported by libtensorflow_cc
XLA_SYMBOL = f"_ZN10tensorflow{len(XLA_FUNCTION)}{XLA_FUNCTION}Ev"  # its Itanium-mangled name


def disable_xla() -> str:
    tf_dir = os.path.dirname(tf.__file__)
    for name in ("libtensorflow_cc.so.2", "libtensorflow_framework.so.2"):
        path = os.path.join(tf_dir, name)
        if os.path.exists(path):
            lib = ctypes.CDLL(path)
            if hasattr(lib, XLA_SYMBOL):
                getattr(lib, XLA_SYMBOL)()
                return name
    raise RuntimeError(f"{XLA_SYMBOL} not found in TensorFlow's shared libraries under {tf_dir}")


def xla_is_disabled() -> bool:
    """True if a jit_compile function now fails the way it would in TF Serving."""
    graph = tf.Graph()
    with graph.as_default():
        probe = tf.function(lambda x: x * 2.0 + 1.0, jit_compile=True)
        x = tf.compat.v1.placeholder(tf.float32, [None])
        y = probe(x)
        with tf.compat.v1.Session(graph=graph) as sess:
            try:
                sess.run(y, {x: [1.0]})
            except tf.errors.OpError as e:
                return "XLA compilation disabled" in str(e)
    return False


def feeds(signature, inputs: dict) -> dict:
    unknown = set(inputs) - set(signature.inputs)
    if unknown:
        raise KeyError(f"inputs {sorted(unknown)} are not in the signature {sorted(signature.inputs)}")
    feed = {}
    for name, info in signature.inputs.items():
        if name in inputs:
            value = inputs[name]
            dtype = tf.dtypes.as_dtype(info.dtype)
            feed[info.name] = np.asarray(value, dtype=object if dtype == tf.string else dtype.as_numpy_dtype)
        elif name in signature.defaults:
            feed[info.name] = tf.make_ndarray(signature.defaults[name])
        else:
            raise KeyError(f"input {name!r} is required: the signature has no default for it")
    return feed


def to_json(value: np.ndarray):
    if value.dtype == object:
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(value).tolist()
    return value.tolist()


def main(version_dir: str, requests_path: str, out_dir: str) -> None:
    report = {
        "tensorflow": tf.__version__,
        "tensorflow_text": TF_TEXT,
        "project_importable": {m: importlib.util.find_spec(m) is not None for m in ("pipeline", "export", "models")},
    }
    report["xla_disabled_via"] = disable_xla()
    report["xla_disabled"] = xla_is_disabled()
    with open(requests_path) as f:
        requests = json.load(f)
    graph = tf.Graph()
    responses = []
    with tf.compat.v1.Session(graph=graph) as sess:
        meta_graph = tf.compat.v1.saved_model.loader.load(sess, TAGS, version_dir)
        for request in requests:
            signature = meta_graph.signature_def[request.get("signature_name", "serving_default")]
            results = sess.run({k: v.name for k, v in signature.outputs.items()}, feeds(signature, request["inputs"]))
            responses.append({"outputs": {key: to_json(value) for key, value in results.items()}})
        report.update(
            signatures=sorted(meta_graph.signature_def),
            signature_defs={
                name: {
                    "method_name": signature.method_name,
                    "inputs": sorted(signature.inputs),
                    "outputs": sorted(signature.outputs),
                    "defaults": sorted(signature.defaults),
                    "output_dtypes": {k: tf.dtypes.as_dtype(v.dtype).name for k, v in signature.outputs.items()},
                }
                for name, signature in meta_graph.signature_def.items()
                if not name.startswith("__")
            },
            op_types=sorted(
                {node.op for node in graph.as_graph_def().node}
                | {node.op for f in meta_graph.graph_def.library.function for node in f.node_def}
            ),
        )
    with open(os.path.join(out_dir, "responses.json"), "w") as f:
        json.dump(responses, f)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
