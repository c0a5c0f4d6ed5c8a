"""Write the JSON Schemas of report.json, calibration.json and the pipeline config to configs/schema/.

Run after changing volbmd/report/models.py, volbmd/calibrate/base.py or volbmd/config.py; a test
fails while the committed schemas are stale.
"""

import json
from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "configs" / "schema"


def schemas() -> dict[str, dict]:
    from volbmd.calibrate.base import Calibration
    from volbmd.config import PipelineConfig
    from volbmd.report import SCHEMA_VERSION, Report

    report = Report.model_json_schema()
    report["$id"] = f"https://volbmd/schema/report-{SCHEMA_VERSION}.json"
    return {
        "report.schema.json": report,
        "calibration.schema.json": Calibration.model_json_schema(),
        "pipeline-config.schema.json": PipelineConfig.model_json_schema(),
    }


def main() -> None:
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas().items():
        (SCHEMA_DIR / name).write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        print(f"wrote {SCHEMA_DIR / name}")


if __name__ == "__main__":
    main()
