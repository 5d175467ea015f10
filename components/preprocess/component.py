"""KFP component for the preprocess step; the logic is in `split.py`."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from textops.components.common.images import DATA_IMAGE


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def preprocess_data(
    validated_data: Input[Dataset],
    validation_fraction: float,
    test_fraction: float,
    seed: int,
    train_data: Output[Dataset],
    validation_data: Output[Dataset],
    test_data: Output[Dataset],
):
    """Clean the validated data and split it into train, validation and test.

    The settings are `SplitSettings` (common/settings.py), checked by that model.
    """
    # The inputs, before anything else is bound: they are checked by their settings model.
    parameters = dict(locals())

    from textops.components.common.logs import configure_logging
    from textops.components.common.settings import SplitSettings, section_from
    from textops.components.preprocess.split import preprocess_file

    configure_logging()

    splitting = section_from(SplitSettings, parameters)
    result = preprocess_file(
        validated_path=validated_data.path,
        validation_fraction=splitting.validation_fraction,
        test_fraction=splitting.test_fraction,
        seed=splitting.seed,
        train_path=train_data.path,
        validation_path=validation_data.path,
        test_path=test_data.path,
    )
    for artifact, split in (
        (train_data, "train"),
        (validation_data, "validation"),
        (test_data, "test"),
    ):
        artifact.metadata.update(result.metadata(split))
        # Where the data came from (validate's record) travels on to the bundle's metadata.
        if "lineage" in validated_data.metadata:
            artifact.metadata["lineage"] = validated_data.metadata["lineage"]
