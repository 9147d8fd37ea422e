"""Loads a SavedModel the way TF Serving does and runs its serving_default signature on a batch.

Run as a script in a fresh process (`python -I serving_client.py VERSION_DIR OBS.npy OUT_DIR`), never
imported: it must see only TensorFlow and TensorFlow Text, as tensorflow_model_server does. It

  1. imports tensorflow and, when importable, tensorflow_text (the server links TF Text's ops);
  2. calls tensorflow::DisableXlaCompilation() through ctypes, as the server does at start, and checks it
     took effect (a jit_compile probe must fail with "XLA compilation disabled");
  3. loads with the TF1 Session loader (what the C++ SavedModelBundle does), not tf.saved_model.load;
  4. feeds OBS.npy to the signature's input tensor and writes each output to OUT_DIR/<output>.npy, plus
     OUT_DIR/report.json describing what it saw.
"""

import ctypes
import importlib.util
import json
import os
import sys

import numpy as np
import tensorflow as tf

try:
    import tensorflow_text  # noqa: F401  (registers TF Text's ops, as the server links them)
    TF_TEXT = True
except ImportError:
    TF_TEXT = False

SIGNATURE = "serving_default"
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


def main(version_dir: str, observations_path: str, out_dir: str) -> None:
    report = {"tensorflow": tf.__version__, "tensorflow_text": TF_TEXT,
              "project_importable": {m: importlib.util.find_spec(m) is not None
                                     for m in ("pipeline", "export", "models")}}
    report["xla_disabled_via"] = disable_xla()
    report["xla_disabled"] = xla_is_disabled()
    observations = np.load(observations_path)
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph) as sess:
        meta_graph = tf.compat.v1.saved_model.loader.load(sess, TAGS, version_dir)
        signature = meta_graph.signature_def[SIGNATURE]
        inputs = {k: v.name for k, v in signature.inputs.items()}
        outputs = {k: v.name for k, v in signature.outputs.items()}
        (input_name,) = inputs.values()
        results = sess.run(outputs, {input_name: observations})
        report.update(
            signatures=sorted(meta_graph.signature_def), method_name=signature.method_name,
            inputs=inputs, outputs=outputs,
            output_dtypes={k: tf.dtypes.as_dtype(v.dtype).name for k, v in signature.outputs.items()},
            op_types=sorted({node.op for node in graph.as_graph_def().node}
                            | {node.op for f in meta_graph.graph_def.library.function for node in f.node_def}))
    for key, value in results.items():
        np.save(os.path.join(out_dir, f"{key}.npy"), value)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
