"""The MLflow pyfunc entry point, logged by path (MLflow's "models from code") instead of as a pickled object.

MLflow runs this file when it logs or loads the model; the class itself lives in pipeline.tracking.
"""

import mlflow

from pipeline.tracking import NewsClassifier

mlflow.models.set_model(NewsClassifier())
