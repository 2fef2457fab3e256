"""infra/: the AWS template passes cfn-lint and is created as a stack in moto's CloudFormation
with the expected resources and policies; the Azure template parses and has the expected
resources and settings. What moto doesn't model (bucket versioning and public access block,
bucket policies, Function URLs) is checked in the parsed template."""

from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
AWS_TEMPLATE = ROOT / "infra" / "aws" / "template.yaml"
AZURE_TEMPLATE = ROOT / "infra" / "azure" / "azuredeploy.json"


def aws_template() -> dict[str, Any]:
    from cfnlint.decode import decode_str

    template, problems = decode_str(AWS_TEMPLATE.read_text())
    assert not problems and template is not None
    return dict(template)


def test_cfn_lint_passes() -> None:
    lint = Path(sys.executable).with_name("cfn-lint")
    done = subprocess.run([str(lint), str(AWS_TEMPLATE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_aws_template_properties_moto_does_not_model() -> None:
    resources = aws_template()["Resources"]
    bucket = resources["ModelBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert set(bucket["PublicAccessBlockConfiguration"].values()) == {True}
    (notification,) = bucket["NotificationConfiguration"]["LambdaConfigurations"]
    assert notification["Event"] == "s3:ObjectCreated:*"
    rules = {r["Name"]: r["Value"] for r in notification["Filter"]["S3Key"]["Rules"]}
    assert rules == {"prefix": "input/", "suffix": ".csv"}
    url = resources["FunctionUrl"]["Properties"]
    assert url["AuthType"] == "AWS_IAM"
    (deny,) = resources["ModelBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"]["Bool"]["aws:SecureTransport"] == "false"


def test_aws_stack_in_moto_has_the_resources_and_least_privilege(aws_credentials) -> None:
    import boto3
    from moto import mock_aws

    template = aws_template()
    del template["Outputs"]["FunctionUrl"]  # reads AWS::Lambda::Url, which moto doesn't model
    with mock_aws(), warnings.catch_warnings():
        # moto creates the stack without the two resource types it doesn't model, and says so
        warnings.filterwarnings("ignore", "Tried to parse AWS::(S3::BucketPolicy|Lambda::Url)")
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="code")
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("functions/aws_lambda.py", "def handler(event, context): ...\n")
        s3.put_object(Bucket="code", Key="scorekit/lambda.zip", Body=code.getvalue())
        cfn = boto3.client("cloudformation")
        cfn.create_stack(
            StackName="sk",
            TemplateBody=json.dumps(template),
            Parameters=[
                {"ParameterKey": "BucketName", "ParameterValue": "sk-models"},
                {"ParameterKey": "CodeBucket", "ParameterValue": "code"},
                {"ParameterKey": "MemorySize", "ParameterValue": "2048"},
            ],
            Capabilities=["CAPABILITY_IAM"],
        )
        assert cfn.describe_stacks(StackName="sk")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
        kinds = {
            r["LogicalResourceId"]: r["ResourceType"]
            for r in cfn.list_stack_resources(StackName="sk")["StackResourceSummaries"]
        }
        assert kinds["ModelBucket"] == "AWS::S3::Bucket"
        assert kinds["ScoringFunction"] == "AWS::Lambda::Function"
        assert kinds["DropPermission"] == "AWS::Lambda::Permission"
        encryption = s3.get_bucket_encryption(Bucket="sk-models")
        rule = encryption["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        function = boto3.client("lambda").get_function(FunctionName="sk-scoring")["Configuration"]
        assert (function["Runtime"], function["Handler"], function["MemorySize"]) == (
            "python3.11", "functions.aws_lambda.handler", 2048,
        )  # fmt: skip
        assert function["Environment"]["Variables"]["SCOREKIT_STORE"] == "s3://sk-models/models"
        (group,) = boto3.client("logs").describe_log_groups()["logGroups"]
        assert (group["logGroupName"], group["retentionInDays"]) == ("/aws/lambda/sk-scoring", 30)
        iam = boto3.client("iam")
        role = function["Role"].split("/")[-1]
        document = iam.get_role_policy(RoleName=role, PolicyName="scorekit-scoring")
        policy = document["PolicyDocument"]
        if isinstance(policy, str):  # moto keeps a stack's inline policy as a Python repr
            policy = ast.literal_eval(policy)
        statements = {s["Sid"]: s for s in policy["Statement"]}
    bucket = "arn:aws:s3:::sk-models"
    assert statements["ReadModelsAndDrops"]["Action"] == "s3:GetObject"
    assert statements["ReadModelsAndDrops"]["Resource"] == [
        f"{bucket}/models/*",
        f"{bucket}/input/*",
    ]
    assert statements["WriteResultsAndReports"]["Action"] == [
        "s3:PutObject", "s3:AbortMultipartUpload",
    ]  # fmt: skip
    assert statements["WriteResultsAndReports"]["Resource"] == [
        f"{bucket}/output/*", f"{bucket}/input/*.error.json",
    ]  # fmt: skip
    assert statements["ListModels"]["Condition"] == {"StringLike": {"s3:prefix": "models/*"}}
    actions = {
        a
        for s in statements.values()
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
                       "s3:ListBucket", "logs:CreateLogStream", "logs:PutLogEvents"}  # fmt: skip
    assert not [s for s in statements.values() if "*" in str(s["Action"])]


def test_azure_template_resources_and_settings() -> None:
    template = json.loads(AZURE_TEMPLATE.read_text())
    text = AZURE_TEMPLATE.read_text()
    for kind, names in (
        ("parameters", template["parameters"]),
        ("variables", template["variables"]),
    ):
        used = set(re.findall(rf"{kind}\('([^']+)'\)", text))
        assert used <= set(names), f"undeclared {kind}: {used - set(names)}"
    resources = {r["type"]: r for r in template["resources"]}
    storage = resources["Microsoft.Storage/storageAccounts"]["properties"]
    assert storage == {"supportsHttpsTrafficOnly": True, "minimumTlsVersion": "TLS1_2",
                       "allowBlobPublicAccess": False}  # fmt: skip
    container = resources["Microsoft.Storage/storageAccounts/blobServices/containers"]
    assert container["properties"] == {"publicAccess": "None"}
    plan = resources["Microsoft.Web/serverfarms"]
    assert plan["sku"] == {"name": "Y1", "tier": "Dynamic"} and plan["properties"]["reserved"]
    site = resources["Microsoft.Web/sites"]
    assert site["kind"] == "functionapp,linux" and site["properties"]["httpsOnly"] is True
    config = site["properties"]["siteConfig"]
    assert config["linuxFxVersion"] == "Python|3.11" and config["minTlsVersion"] == "1.2"
    settings = {s["name"]: s["value"] for s in config["appSettings"]}
    assert settings["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert settings["FUNCTIONS_EXTENSION_VERSION"] == "~4"
    assert settings["SCOREKIT_STORE"] == "[parameters('storeUrl')]"
    assert settings["FUNCTIONS_WORKER_PROCESS_COUNT"] == "[string(parameters('workerProcesses'))]"
    assert settings["PYTHON_THREADPOOL_THREAD_COUNT"] == "1"
    assert "listKeys" in settings["AzureWebJobsStorage"]
    assert settings["WEBSITE_RUN_FROM_PACKAGE"] == "[parameters('packageUrl')]"
    assert template["parameters"]["packageUrl"]["type"] == "securestring"
    subscription = resources["Microsoft.EventGrid/systemTopics/eventSubscriptions"]
    assert subscription["condition"] == "[parameters('subscribeToDrops')]"
    destination = subscription["properties"]["destination"]
    assert destination["endpointType"] == "AzureFunction"
    assert destination["properties"]["resourceId"].endswith("'/functions/scorekit_blob_drop')]")
    assert "def scorekit_blob_drop(" in (ROOT / "function_app.py").read_text()
    filters = subscription["properties"]["filter"]
    assert filters["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert filters["subjectEndsWith"] == ".csv" and "/blobs/input/" in filters["subjectBeginsWith"]


@pytest.mark.parametrize(
    ("value", "expected"), [("", ()), ("audit", ("audit",)), (" a, b ,", ("a", "b"))]
)
def test_preload_setting(value: str, expected: tuple[str, ...]) -> None:
    from scorekit import _http

    assert _http.Settings.from_env({"SCOREKIT_PRELOAD": value}).preload == expected


def test_preload_loads_at_start_and_a_bad_name_only_warns(trained, session_store, caplog) -> None:
    from scorekit import _http

    manifest = trained("audit")
    settings = _http.Settings(store=str(session_store.url), preload=(manifest.name, "nosuch"))
    app = _http.HttpApp(settings)
    assert app.models.get(manifest.name).version == manifest.version
    assert "could not preload model nosuch" in caplog.text
