"""An MLServer custom runtime serving an aeserve bundle's energy graph with ONNX Runtime: what
a user of MLServer would write to serve the same model. ``benchmarks/serving.py`` starts
MLServer with it (adaptive batching on) beside ``aeserve serve`` on the same bundle.

It reads only the bundle's ``energy.onnx`` and ``manifest.json`` (outputs, threshold), so it
runs in MLServer's own environment without aeserve installed.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class EnergyRuntime(MLModel):
    """energy, its terms and anomaly of the rows in input ``y`` (rows, features), float32."""

    async def load(self) -> bool:
        bundle = self.settings.parameters.uri
        with open(os.path.join(bundle, "manifest.json")) as fh:
            manifest = json.load(fh)
        self.names = [name for name in manifest["graphs"]["fp32"]["energy"]["outputs"] if name != "contributions"]
        self.threshold = float(manifest["threshold"]["value"])
        self.session = ort.InferenceSession(os.path.join(bundle, "energy.onnx"), providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        values = dict(zip(self.names, self.session.run(self.names, {"y": rows})))
        values["anomaly"] = (values["energy"] > self.threshold).astype(np.uint8)
        return InferenceResponse(model_name=self.name, id=payload.id,
                                 outputs=[NumpyCodec.encode_output(name, array) for name, array in values.items()])
