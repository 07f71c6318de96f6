"""Models: the registry (engine.models.registry) and the catalog of registered models. Importing
this package builds nothing and imports no TensorFlow; `build` imports a model's family module."""
from engine.models import catalog  # noqa: F401 - registers every model
from engine.models.registry import (BACKBONE, ModelSpec, build, data_init, get, global_policy,  # noqa: F401
                                    input_size, is_user_model, names, preprocess_for, register, specs, variable)
