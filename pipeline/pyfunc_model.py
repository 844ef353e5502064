"""The MLflow pyfunc of every model this pipeline logs, logged by path (MLflow's "models from code").

MLflow runs this file when it logs or loads the model: `set_model` at the bottom names the model object.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd

from pipeline.scoring import load_scorer
from pipeline.text import join_fields


class NewsClassifier(mlflow.pyfunc.PythonModel):
    """A DataFrame with `text` (or the model's text fields, e.g. `title` + `text`) in; label, calibrated
    confidence and one `prob_<label>` column per label out, row for row; a multi-label model adds `labels` (every
    label at or above its threshold, the primary first)."""

    def load_context(self, context: Any) -> None:
        """Load the bundled model directory through the predictor's own scorer, not a copy of it."""
        self.scorer = load_scorer(context.artifacts["model_dir"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Label, confidence and probabilities (a DataFrame hint is one mlflow accepts without deriving a schema)."""
        frame = pd.DataFrame(model_input)
        fields = [f for f in self.scorer.cfg.data.text_fields if f in frame.columns] or ["text"]
        texts = [join_fields(row) for row in frame[fields].astype("string").fillna("").itertuples(index=False)]
        probs = self.scorer.predict_proba(texts)
        labels = list(self.scorer.labels.ids)
        out = pd.DataFrame({"label": [labels[i] for i in probs.argmax(axis=1)], "confidence": probs.max(axis=1)})
        if self.scorer.multi:
            out["labels"] = self.scorer.label_sets(probs)
        for i, label in enumerate(labels):
            out[f"prob_{label}"] = probs[:, i]
        return out


mlflow.models.set_model(NewsClassifier())
