"""Prints template.yaml as JSON, before and after the SAM transform, for tests/tests/template.rs.

    python tests/template/render.py template.yaml  ->  {"template": {...}, "transformed": {...}}

"template" is the file as written (CloudFormation short tags such as !Ref, !Sub and !GetAtt
become their long forms, {"Ref": ...}, {"Fn::Sub": ...}); "transformed" is what CloudFormation
deploys after AWS::Serverless-2016-10-31 (SAM's own translator, offline): the IAM roles SAM
generates for each function, with every policy it adds (basic execution, VPC access, failure
destinations). `sam package` replaces CodeUri with an S3 location; so does this script.
"""

import copy
import json
import os
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicyLookups:
    """The template names managed policies by ARN only; a name to resolve is a mistake."""

    def load(self):
        raise RuntimeError("template refers to a managed policy by name; use its ARN")


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(path, encoding="utf-8") as f:
        template = yaml_parse(f.read())
    packaged = copy.deepcopy(template)
    for resource in packaged.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource.setdefault("Properties", {})["CodeUri"] = "s3://bucket/function.zip"
    transformed = transform(packaged, {}, NoManagedPolicyLookups())
    json.dump({"template": template, "transformed": transformed}, sys.stdout, default=str)


if __name__ == "__main__":
    main()
