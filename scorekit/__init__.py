"""scorekit: score scikit-learn pipelines exported as PMML and pickles, in functions, databases
and batch jobs, with the same answers everywhere.

Importing scorekit needs numpy only; scikit-learn, pandas, pypmml and boto3 are imported inside
the engines and tools that use them, when they are used.
"""

from ._batch import BatchJob, BatchResult, run_batch
from ._bundle import MANIFEST_FILE, PICKLE_FILE, PMML_FILE, Bundle
from ._config import database_url
from ._errors import (
    EngineUnavailableError,
    IncompatibleModelError,
    InputError,
    IntegrityError,
    LockHeldError,
    MissingColumnsError,
    ModelError,
    ModelNotFoundError,
    Problem,
    ScorekitError,
    StoreError,
    UnsupportedModelError,
    UsageError,
)
from ._loading import load_model
from ._manifest import Manifest
from ._model import Model
from ._output import PREDICTION, Scores, output_columns, probability_column
from ._schema import MISSING_TOKENS, Field, InputSchema
from ._scorer import ENGINES, Scorer
from ._store import CHAMPION, ModelStore, open_store
from ._training import train

__version__ = "0.1.0"

__all__ = [
    "CHAMPION",
    "ENGINES",
    "MANIFEST_FILE",
    "MISSING_TOKENS",
    "PICKLE_FILE",
    "PMML_FILE",
    "PREDICTION",
    "BatchJob",
    "BatchResult",
    "Bundle",
    "EngineUnavailableError",
    "Field",
    "IncompatibleModelError",
    "InputError",
    "InputSchema",
    "IntegrityError",
    "LockHeldError",
    "Manifest",
    "MissingColumnsError",
    "Model",
    "ModelError",
    "ModelNotFoundError",
    "ModelStore",
    "Problem",
    "ScorekitError",
    "Scorer",
    "Scores",
    "StoreError",
    "UnsupportedModelError",
    "UsageError",
    "__version__",
    "database_url",
    "load_model",
    "open_store",
    "output_columns",
    "probability_column",
    "run_batch",
    "train",
]
