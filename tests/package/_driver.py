"""Runs inside a packaged function's own virtualenv (never the project's): serve each entry
point with functions-framework and answer one request per case, as JSON on stdout.

    <venv>/bin/python _driver.py <package dir> <cases.json>

Only the standard library and what the package's requirements.txt installed are used.
"""

import base64
import json
import os
import sys


def main() -> None:
    package, cases_file = sys.argv[1], sys.argv[2]
    os.chdir(package)
    import functions_framework

    with open(cases_file) as f:
        cases = json.load(f)
    results = []
    for case in cases:
        app = functions_framework.create_app(case["target"], os.path.join(package, "main.py"))
        client = app.test_client()
        if case["kind"] == "push":
            body = {
                "message": {
                    "data": base64.b64encode(case["data"].encode()).decode(),
                    "attributes": case["attributes"],
                    "messageId": case["message_id"],
                    "publishTime": case["publish_time"],
                },
                "subscription": "projects/sight-local/subscriptions/package-test",
            }
            response = client.post(case["path"], json=body)
        else:
            response = client.open(
                case["path"], method=case["method"], data=case["data"], headers=case["headers"]
            )
        results.append(
            {
                "name": case["name"],
                "status": response.status_code,
                "body": response.get_data(True)[:300],
            }
        )
    import shared

    isolation = {"shared": shared.__file__, "sightops_importable": _importable("sightops")}
    print(json.dumps({"results": results, "isolation": isolation}))


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    main()
