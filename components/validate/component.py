"""KFP component for the validate step; the logic is in `checks.py`."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Markdown, Output

from textops.components.common.images import DATA_IMAGE


@dsl.component(base_image=DATA_IMAGE, install_kfp_package=False)
def validate_data(
    data: str,
    data_format: str,
    text_column: str,
    label_column: str,
    validated_data: Output[Dataset],
    report: Output[HTML],
    summary: Output[Markdown],
):
    """Validate labelled data with Great Expectations; fail the run on a critical finding."""
    from textops.components.common.logs import configure_logging
    from textops.components.validate.checks import validate_file

    configure_logging()

    result = validate_file(
        data=data,
        data_format=data_format,
        text_column=text_column,
        label_column=label_column,
        validated_path=validated_data.path,
        report_path=report.path,
        summary_path=summary.path,
    )
    validated_data.metadata.update(result.metadata())
