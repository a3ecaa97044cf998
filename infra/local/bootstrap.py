#!/usr/bin/env python3
"""Create the resources of template.yaml in the local emulators — from the template itself.

The template goes through the real SAM transform (samtranslator), then every resource is created
in LocalStack or DynamoDB Local with the properties the template gives it. A resource type this
script does not know is an error, never silently ignored, so the local stack cannot drift from
what AWS gets. Types that cannot or need not exist locally are listed in SKIPPED with the reason.
A resource (or output) whose Condition is false with the given parameters is not created, as in
AWS; its type must still be one this script knows. E.g. the edge service (condition HasEdge,
false while EdgeImageUri is empty, as it is locally) creates nothing here: locally pec-runner
hosts the same code (--smtp-port, --imap-port, --pop3-port).

    bootstrap.py --template template.yaml --state-dir .local/stack [--stack-name pec-local]
                 [--parameter Key=Value ...] [--check]

--check transforms and validates coverage only (no AWS calls): the test command runs it.

Writes, for the stack name S:
    <state-dir>/S.resources.json   outputs and every resource's physical name/ARN/URL
    <state-dir>/S.env              `export` lines: the Globals.Function environment, resolved
                                   exactly as Lambda would see it, plus PEC_OUTPUT_* per output

Endpoints come from AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_DYNAMODB (infra/local/stack.sh env).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

ACCOUNT = "000000000000"
PARTITION = "aws"

API_LOCALLY = "pec-runner hosts the api function's router on a local port (--api-port); API Gateway is not emulated"
EDGE_LOCALLY = "the edge service runs in pec-runner locally (--smtp-port, --imap-port, --pop3-port), not on ECS"

SCHEDULE_LOCALLY = "schedules are driven by the local runner's injectable clock"

# Parameters every local stack gets (the emulators only: main refuses a real account), unless
# --parameter says otherwise: webhook receivers in tests and the demo listen on 127.0.0.1, and
# webhook retries come after 1, 2 and 3 seconds (AWS: 5 s to 10 h, 27.6 h in all) so that a
# parked delivery and its replay can be seen in a test.
LOCAL_PROFILE = {
    "WebhookPrivateTargets": "allow",
    "WebhookRetrySchedule": "1,2,3",
    # Members import over the API mails links to the runner's API (its port varies: the
    # links are read by tests, which post the token to /v1/activation).
    "ActivationUrl": "http://127.0.0.1/attiva",
    # Password protection checks breach data offline: a small file in the shape of the
    # Pwned Passwords download (docs/password-protection.md lists what is in it).
    "BreachUrl": (Path(__file__).resolve().parent / "pwned-sample.txt").as_uri(),
}

SKIPPED = {
    "AWS::SQS::QueuePolicy": "LocalStack does not enforce resource policies (applied in AWS only)",
    "AWS::CloudWatch::Alarm": "CloudWatch is not emulated here; tests read dead-letter queue depth directly",
    "AWS::Lambda::Function": "functions run in-process in the local runner (Lambda needs Docker)",
    "AWS::Lambda::EventSourceMapping": "the local runner polls the same queues the mapping names",
    "AWS::Lambda::Permission": "IAM and resource policies are not enforced locally",
    "AWS::Lambda::LayerVersion": "the ClamAV layer is for Lambda; locally clamd comes from infra/local/clamd.sh (infra/antivirus/layer-test.sh runs the layer itself)",
    "AWS::IAM::Role": "IAM is not enforced locally",
    "AWS::IAM::Policy": "IAM is not enforced locally",
    "AWS::Logs::LogGroup": "local functions log to the runner's output",
    "AWS::Scheduler::Schedule": "schedules are driven by the local runner's injectable clock",
    "AWS::SES::ReceiptRuleSet": "SES receipt rules never execute in LocalStack; inbound mail is written to S3 directly",
    "AWS::SES::ReceiptRule": "SES receipt rules never execute in LocalStack; inbound mail is written to S3 directly",
    "AWS::CloudFormation::CustomResource": "custom resources act on real AWS only",
    "AWS::S3::BucketPolicy": "LocalStack does not enforce resource policies (applied in AWS only)",
    # The edge service (pec-edge): a container on ECS Fargate behind a network load balancer in
    # AWS; locally pec-runner hosts the same code (--smtp-port, --imap-port, --pop3-port).
    # The integration API: API Gateway's HTTP API in AWS (the SAM HttpApi event); locally the
    # runner serves the same router (--api-port).
    "AWS::ApiGatewayV2::Api": API_LOCALLY,
    "AWS::ApiGatewayV2::Stage": API_LOCALLY,
    "AWS::ECS::Cluster": EDGE_LOCALLY,
    "AWS::ECS::TaskDefinition": EDGE_LOCALLY,
    "AWS::ECS::Service": EDGE_LOCALLY,
    "AWS::EC2::SecurityGroup": EDGE_LOCALLY,
    "AWS::EC2::SecurityGroupEgress": EDGE_LOCALLY,
    "AWS::ElasticLoadBalancingV2::LoadBalancer": EDGE_LOCALLY,
    "AWS::ElasticLoadBalancingV2::TargetGroup": EDGE_LOCALLY,
    "AWS::ElasticLoadBalancingV2::Listener": EDGE_LOCALLY,
    "AWS::ApplicationAutoScaling::ScalableTarget": EDGE_LOCALLY,
    "AWS::ApplicationAutoScaling::ScalingPolicy": EDGE_LOCALLY,
}


class BootstrapError(Exception):
    pass


# ----------------------------------------------------------------------------- template loading


def load_template(path: str, parameters: dict[str, str]) -> tuple[dict, dict]:
    """Returns (original template, SAM-transformed template)."""
    from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    class OfflinePolicies(ManagedPolicyLoader):
        """AWS managed policy names map to their well-known ARNs; no IAM call is made."""

        def __init__(self) -> None:  # noqa: D401 - no IAM client needed
            pass

        def load(self) -> dict[str, str]:
            class Arns(dict):
                def get(self, key, default=None):  # type: ignore[override]
                    return f"arn:{PARTITION}:iam::aws:policy/{key}"

                def __getitem__(self, key):
                    return self.get(key)

                def __contains__(self, key):
                    return True

            return Arns()

    from samtranslator.model.exceptions import InvalidDocumentException

    with open(path, encoding="utf-8") as f:
        original = yaml_parse(f.read())
    packaged = json.loads(json.dumps(original))
    # As `sam package` does: local CodeUri paths become S3 URIs before the transform.
    for res in packaged.get("Resources", {}).values():
        props = res.get("Properties", {})
        if res.get("Type") == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str) \
                and not props["CodeUri"].startswith("s3://"):
            props["CodeUri"] = "s3://packaged-artifacts/" + props["CodeUri"]
        if res.get("Type") == "AWS::Serverless::LayerVersion" and isinstance(props.get("ContentUri"), str) \
                and not props["ContentUri"].startswith("s3://"):
            props["ContentUri"] = "s3://packaged-artifacts/" + props["ContentUri"]
    # The transform only needs a region name to build ARNs; it makes no AWS call.
    os.environ.setdefault("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "eu-south-1"))
    try:
        transformed = transform(packaged, parameters, OfflinePolicies())
    except InvalidDocumentException as e:
        causes = "; ".join(str(c) for c in e.causes)
        raise BootstrapError(f"SAM transform rejected {path}: {causes}") from None
    return original, transformed


# ----------------------------------------------------------------------------- intrinsics


class Resolver:
    def __init__(self, stack: str, region: str, params: dict[str, Any]):
        self.pseudo = {
            "AWS::StackName": stack,
            "AWS::AccountId": ACCOUNT,
            "AWS::Region": region,
            "AWS::Partition": PARTITION,
            "AWS::URLSuffix": "amazonaws.com",
        }
        self.params = params
        self.physical: dict[str, dict[str, Any]] = {}
        self.conditions: dict[str, bool] = {}

    def ref(self, name: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        if name in self.physical:
            return self.physical[name]["Ref"]
        raise BootstrapError(f"!Ref {name}: not a parameter, pseudo parameter or created resource")

    def get_att(self, name: str, attr: str) -> Any:
        try:
            return self.physical[name][attr]
        except KeyError:
            raise BootstrapError(f"!GetAtt {name}.{attr}: unknown resource or attribute") from None

    def sub(self, text: str, extra: dict[str, Any]) -> str:
        def repl(m: re.Match) -> str:
            token = m.group(1)
            if token.startswith("!"):
                return "${" + token[1:] + "}"
            if token in extra:
                return str(extra[token])
            if "." in token:
                name, attr = token.split(".", 1)
                return str(self.get_att(name, attr))
            return str(self.ref(token))

        return re.sub(r"\$\{([^}]+)\}", repl, text)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (self.resolve(v) for v in value) if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return _NO_VALUE if arg == "AWS::NoValue" else self.ref(arg)
            if key == "Fn::GetAtt":
                name, attr = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.get_att(name, attr)
            if key == "Fn::Sub":
                if isinstance(arg, str):
                    return self.sub(arg, {})
                text, variables = arg
                return self.sub(text, {k: self.resolve(v) for k, v in variables.items()})
            if key == "Fn::Join":
                sep, items = arg
                return sep.join(str(i) for i in self.resolve(items))
            if key == "Fn::If":
                name, if_true, if_false = arg
                if name not in self.conditions:
                    raise BootstrapError(f"Fn::If {name}: not a condition of the template")
                return self.resolve(if_true if self.conditions[name] else if_false)
            if key.startswith("Fn::"):
                raise BootstrapError(f"{key} is not supported by the local bootstrap; extend bootstrap.py")
        out = {}
        for k, v in value.items():
            r = self.resolve(v)
            if r is not _NO_VALUE:
                out[k] = r
        return out


_NO_VALUE = object()


def evaluate_conditions(template: dict, resolver: Resolver) -> dict[str, bool]:
    """The template's Conditions, evaluated with the resolver's parameters (Fn::Equals, Fn::Not,
    Fn::And, Fn::Or, Condition; Ref/Sub/Join inside Fn::Equals). Also stored in the resolver,
    for Fn::If. Any other function is an error, never a guess."""
    definitions = template.get("Conditions", {}) or {}
    values: dict[str, bool] = {}

    def condition(name: str, path: tuple[str, ...]) -> bool:
        if name in values:
            return values[name]
        if name not in definitions:
            raise BootstrapError(f"condition {name} is not defined in Conditions")
        if name in path:
            raise BootstrapError("condition cycle: " + " -> ".join(path + (name,)))
        values[name] = evaluate(definitions[name], path + (name,))
        return values[name]

    def evaluate(expr: Any, path: tuple[str, ...]) -> bool:
        if not isinstance(expr, dict) or len(expr) != 1:
            raise BootstrapError(f"condition {path[-1]}: {expr!r} is not a condition function")
        (fn, arg), = expr.items()
        if fn == "Condition":
            return condition(arg, path)
        if fn == "Fn::Equals":
            left, right = (resolver.resolve(a) for a in arg)
            return str(left) == str(right)
        if fn == "Fn::Not":
            return not evaluate(arg[0], path)
        if fn == "Fn::And":
            return all(evaluate(a, path) for a in arg)
        if fn == "Fn::Or":
            return any(evaluate(a, path) for a in arg)
        raise BootstrapError(f"condition {path[-1]}: {fn} is not supported by the local bootstrap; extend bootstrap.py")

    for name in definitions:
        condition(name, ())
    resolver.conditions = dict(values)
    return values


def references(value: Any) -> set[str]:
    """Logical ids a property tree refers to (Ref, GetAtt, ${...} in Sub)."""
    found: set[str] = set()
    if isinstance(value, list):
        for v in value:
            found |= references(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            if k == "Ref" and isinstance(v, str):
                found.add(v)
            elif k == "Fn::GetAtt":
                found.add(v.split(".", 1)[0] if isinstance(v, str) else v[0])
            elif k == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                for token in re.findall(r"\$\{([^}!][^}]*)\}", text):
                    found.add(token.split(".", 1)[0])
                if not isinstance(v, str):
                    found |= references(v[1])
            else:
                found |= references(v)
    return found


def creation_order(resources: dict[str, dict]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise BootstrapError("dependency cycle: " + " -> ".join(path + [name]))
        state[name] = 1
        res = resources[name]
        deps = references(res.get("Properties", {}))
        depends_on = res.get("DependsOn", [])
        deps |= set([depends_on] if isinstance(depends_on, str) else depends_on)
        for dep in sorted(d for d in deps if d in resources):
            visit(dep, path + [name])
        state[name] = 2
        order.append(name)

    for name in sorted(resources):
        visit(name, [])
    return order


# ----------------------------------------------------------------------------- creators


class Creator:
    def __init__(self, stack: str, region: str):
        import boto3

        self.stack = stack
        self.region = region
        self.s3 = boto3.client("s3", region_name=region)
        self.sqs = boto3.client("sqs", region_name=region)
        self.ddb = boto3.client("dynamodb", region_name=region)
        self.kms = boto3.client("kms", region_name=region)
        self.events = boto3.client("events", region_name=region)
        self.sns = boto3.client("sns", region_name=region)
        self.ses = boto3.client("ses", region_name=region)

    # Resource type -> method that creates it (idempotently) and returns its attributes.
    HANDLERS = {
        "AWS::SQS::Queue": "queue",
        "AWS::S3::Bucket": "bucket",
        "AWS::DynamoDB::Table": "table",
        "AWS::KMS::Key": "key",
        "AWS::KMS::Alias": "alias",
        "AWS::Events::EventBus": "event_bus",
        "AWS::Events::Rule": "rule",
        "AWS::SNS::Topic": "topic",
        "AWS::SES::EmailIdentity": "email_identity",
    }

    def handlers(self) -> dict[str, Callable[[str, dict], dict]]:
        return {rtype: getattr(self, method) for rtype, method in self.HANDLERS.items()}

    def queue(self, logical: str, p: dict) -> dict:
        name = p.get("QueueName") or f"{self.stack}-{logical}"
        attrs = {}
        for key in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds",
                    "MaximumMessageSize", "ReceiveMessageWaitTimeSeconds", "SqsManagedSseEnabled"):
            if key in p:
                attrs[key] = str(p[key]).lower() if isinstance(p[key], bool) else str(p[key])
        if "RedrivePolicy" in p:
            attrs["RedrivePolicy"] = json.dumps(p["RedrivePolicy"])
        url = self.sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return {"Ref": url, "Arn": arn, "QueueName": name, "QueueUrl": url}

    def bucket(self, logical: str, p: dict) -> dict:
        from botocore.exceptions import ClientError

        name = p.get("BucketName") or f"{self.stack}-{logical}".lower()
        kwargs: dict[str, Any] = {"Bucket": name}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        if p.get("ObjectLockEnabled") in (True, "true", "True"):
            kwargs["ObjectLockEnabledForBucket"] = True
        try:
            self.s3.create_bucket(**kwargs)
        except ClientError as e:
            if e.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                raise
        if "VersioningConfiguration" in p:
            self.s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": p["VersioningConfiguration"]["Status"]})
        olc = p.get("ObjectLockConfiguration")
        # Object Lock without a default rule (the evidence bucket): writers lock each object.
        if olc and olc.get("Rule"):
            retention = dict(olc["Rule"]["DefaultRetention"])
            for unit in ("Days", "Years"):
                if unit in retention:
                    retention[unit] = int(retention[unit])
            self.s3.put_object_lock_configuration(
                Bucket=name,
                ObjectLockConfiguration={"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": retention}},
            )
        enc = p.get("BucketEncryption")
        if enc:
            rules = [
                {"ApplyServerSideEncryptionByDefault": r["ServerSideEncryptionByDefault"],
                 **({"BucketKeyEnabled": r["BucketKeyEnabled"]} if "BucketKeyEnabled" in r else {})}
                for r in enc["ServerSideEncryptionConfiguration"]
            ]
            self.s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        if "PublicAccessBlockConfiguration" in p:
            self.s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=p["PublicAccessBlockConfiguration"])
        if "OwnershipControls" in p:
            self.s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=p["OwnershipControls"])
        life = p.get("LifecycleConfiguration")
        if life:
            rules = []
            for r in life["Rules"]:
                rule: dict[str, Any] = {"ID": r.get("Id", "rule"), "Status": r["Status"], "Filter": {"Prefix": r.get("Prefix", "")}}
                if "ExpirationInDays" in r:
                    rule["Expiration"] = {"Days": int(r["ExpirationInDays"])}
                if "NoncurrentVersionExpiration" in r:
                    rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(r["NoncurrentVersionExpiration"]["NoncurrentDays"])}
                rules.append(rule)
            self.s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
        notif = p.get("NotificationConfiguration")
        if notif:
            unknown = set(notif) - {"QueueConfigurations"}
            if unknown:
                raise BootstrapError(f"{logical}: notification kinds {sorted(unknown)} are not handled by bootstrap.py")
            qcs = []
            for q in notif.get("QueueConfigurations", []):
                qc: dict[str, Any] = {"QueueArn": q["Queue"], "Events": [q["Event"]]}
                rules = q.get("Filter", {}).get("S3Key", {}).get("Rules")
                if rules:
                    qc["Filter"] = {"Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}}
                qcs.append(qc)
            self.s3.put_bucket_notification_configuration(
                Bucket=name, NotificationConfiguration={"QueueConfigurations": qcs}
            )
        arn = f"arn:{PARTITION}:s3:::{name}"
        return {"Ref": name, "Arn": arn, "BucketName": name}

    def table(self, logical: str, p: dict) -> dict:
        name = p.get("TableName") or f"{self.stack}-{logical}"
        kwargs: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": p["AttributeDefinitions"],
            "KeySchema": p["KeySchema"],
            "BillingMode": p.get("BillingMode", "PROVISIONED"),
        }
        if kwargs["BillingMode"] == "PROVISIONED":
            kwargs["ProvisionedThroughput"] = p["ProvisionedThroughput"]
        if p.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = [
                {"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
                for g in p["GlobalSecondaryIndexes"]
            ]
        if p.get("StreamSpecification"):
            kwargs["StreamSpecification"] = {"StreamEnabled": True, **p["StreamSpecification"]}
        try:
            desc = self.ddb.create_table(**kwargs)["TableDescription"]
        except self.ddb.exceptions.ResourceInUseException:
            desc = self.ddb.describe_table(TableName=name)["Table"]
        self.ddb.get_waiter("table_exists").wait(TableName=name)
        ttl = p.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled") in (True, "true"):
            current = self.ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                self.ddb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
                )
        # PointInTimeRecovery and SSESpecification are AWS-side durability settings; DynamoDB Local has neither.
        out = {"Ref": name, "Arn": desc["TableArn"], "TableName": name}
        if desc.get("LatestStreamArn"):
            out["StreamArn"] = desc["LatestStreamArn"]
        return out

    def key(self, logical: str, p: dict) -> dict:
        tag = {"TagKey": "pec:logical-id", "TagValue": f"{self.stack}/{logical}"}
        for page in self.kms.get_paginator("list_keys").paginate():
            for k in page["Keys"]:
                tags = self.kms.list_resource_tags(KeyId=k["KeyId"]).get("Tags", [])
                if tag in tags:
                    return {"Ref": k["KeyId"], "Arn": k["KeyArn"], "KeyId": k["KeyId"]}
        kwargs: dict[str, Any] = {
            "KeySpec": p.get("KeySpec", "SYMMETRIC_DEFAULT"),
            "KeyUsage": p.get("KeyUsage", "ENCRYPT_DECRYPT"),
            "Description": p.get("Description", logical),
            "Tags": [tag],
        }
        if "KeyPolicy" in p:
            kwargs["Policy"] = json.dumps(p["KeyPolicy"])
        meta = self.kms.create_key(**kwargs)["KeyMetadata"]
        return {"Ref": meta["KeyId"], "Arn": meta["Arn"], "KeyId": meta["KeyId"]}

    def alias(self, logical: str, p: dict) -> dict:
        name = p["AliasName"]
        aliases = {a["AliasName"]: a for page in self.kms.get_paginator("list_aliases").paginate() for a in page["Aliases"]}
        if name in aliases:
            self.kms.update_alias(AliasName=name, TargetKeyId=p["TargetKeyId"])
        else:
            self.kms.create_alias(AliasName=name, TargetKeyId=p["TargetKeyId"])
        return {"Ref": name}

    def event_bus(self, logical: str, p: dict) -> dict:
        name = p["Name"]
        try:
            arn = self.events.create_event_bus(Name=name)["EventBusArn"]
        except self.events.exceptions.ResourceAlreadyExistsException:
            arn = self.events.describe_event_bus(Name=name)["Arn"]
        return {"Ref": name, "Arn": arn, "Name": name}

    def rule(self, logical: str, p: dict) -> dict:
        """An event-pattern rule on a bus, with its targets (LocalStack delivers to SQS targets).
        Schedule rules never reach here: check_coverage skips them (the runner's clock)."""
        name = p.get("Name") or f"{self.stack}-{logical}"
        bus = p.get("EventBusName", "default")
        arn = self.events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(p["EventPattern"]),
                                   State=p.get("State", "ENABLED"))["RuleArn"]
        targets = [{"Id": t["Id"], "Arn": t["Arn"]} for t in p.get("Targets", [])]
        if targets:
            self.events.put_targets(Rule=name, EventBusName=bus, Targets=targets)
        return {"Ref": name, "Arn": arn}

    def email_identity(self, logical: str, p: dict) -> dict:
        """A domain (or address) SES may send from. LocalStack's SendRawEmail refuses a Source that
        is neither a verified address nor in a verified domain; its verification succeeds at once
        (no DNS). The DKIM tokens stand in for the CNAMEs AWS would ask for."""
        identity = p["EmailIdentity"]
        if "@" in identity:
            self.ses.verify_email_identity(EmailAddress=identity)
            tokens: list[str] = []
        else:
            self.ses.verify_domain_identity(Domain=identity)
            tokens = self.ses.verify_domain_dkim(Domain=identity)["DkimTokens"]
        status = self.ses.get_identity_verification_attributes(Identities=[identity])[
            "VerificationAttributes"].get(identity, {}).get("VerificationStatus")
        if status != "Success":
            raise BootstrapError(f"{logical}: SES identity {identity} is not verified ({status})")
        out: dict[str, Any] = {"Ref": identity}
        for i, token in enumerate(tokens[:3], start=1):
            out[f"DkimDNSTokenName{i}"] = f"{token}._domainkey.{identity}"
            out[f"DkimDNSTokenValue{i}"] = f"{token}.dkim.amazonses.com"
        return out

    def topic(self, logical: str, p: dict) -> dict:
        name = p.get("TopicName") or f"{self.stack}-{logical}"
        arn = self.sns.create_topic(Name=name)["TopicArn"]
        return {"Ref": arn, "TopicArn": arn, "TopicName": name}


# ----------------------------------------------------------------------------- main


def parameters_from(template: dict, overrides: dict[str, str]) -> dict[str, Any]:
    params = {}
    for name, spec in template.get("Parameters", {}).items():
        if name in overrides:
            params[name] = overrides[name]
        elif "Default" in spec:
            params[name] = spec["Default"]
        else:
            raise BootstrapError(f"parameter {name} has no default: pass --parameter {name}=...")
    unknown = set(overrides) - set(params)
    if unknown:
        raise BootstrapError(f"unknown parameters: {sorted(unknown)}")
    return params


def check_coverage(transformed: dict, handled: set[str],
                   conditions: dict[str, bool] | None = None) -> list[tuple[str, str, str]]:
    """(logical id, type, action) for every resource; raises on a type nobody handles (even under
    a false condition: a type this script does not know is a decision nobody made). A resource
    whose Condition is false in `conditions` (default: the conditions with the template's
    default parameters) is skipped for that reason."""
    rows = []
    if conditions is None:
        defaults = Resolver("pec-local", os.environ.get("AWS_DEFAULT_REGION", "eu-south-1"),
                            parameters_from(transformed, {}))
        conditions = evaluate_conditions(transformed, defaults)
    for logical, res in sorted(transformed.get("Resources", {}).items()):
        rtype = res["Type"]
        if rtype not in handled and rtype not in SKIPPED:
            raise BootstrapError(
                f"resource {logical} has type {rtype}, which bootstrap.py neither creates nor skips: "
                "add a creator (or a SKIPPED entry with the reason) so local and AWS stay the same"
            )
        condition = res.get("Condition")
        if condition is not None and condition not in conditions:
            raise BootstrapError(f"resource {logical}: condition {condition} is not defined in Conditions")
        if condition is not None and not conditions[condition]:
            rows.append((logical, rtype, f"skip: condition {condition} is false"))
        elif rtype == "AWS::Events::Rule" and "ScheduleExpression" in res.get("Properties", {}):
            rows.append((logical, rtype, "skip: " + SCHEDULE_LOCALLY))
        elif rtype in handled:
            rows.append((logical, rtype, "create"))
        else:
            rows.append((logical, rtype, "skip: " + SKIPPED[rtype]))
    return rows


def to_create(transformed: dict, handled: set[str], conditions: dict[str, bool]) -> list[str]:
    """The logical ids the bootstrap creates, dependencies first."""
    creates = {logical for logical, _, action in check_coverage(transformed, handled, conditions)
               if action == "create"}
    return [logical for logical in creation_order(transformed["Resources"]) if logical in creates]


def outputs_to_write(original: dict, conditions: dict[str, bool], created: set[str]) -> dict[str, dict]:
    """The outputs the local stack has: not those under a false condition, nor those naming a
    resource that is not created locally (e.g. the edge's load balancer when EdgeImageUri is set)."""
    resources = set(original.get("Resources", {}))
    out = {}
    for name, output in original.get("Outputs", {}).items():
        condition = output.get("Condition")
        if condition is not None and not conditions.get(condition, False):
            continue
        if (references(output.get("Value")) & resources) - created:
            continue
        out[name] = output
    return out


def kms_sign_holders(transformed: dict) -> set[str]:
    """Logical ids of IAM roles/policies that allow kms:Sign (or a wildcard covering it)."""
    def allows_sign(statement: dict) -> bool:
        if statement.get("Effect") != "Allow":
            return False
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        return any(a.lower() in ("kms:sign", "kms:*", "*") or a.lower().startswith("kms:sign") for a in actions)

    holders = set()
    for logical, res in transformed.get("Resources", {}).items():
        props = res.get("Properties", {})
        docs = []
        if res["Type"] == "AWS::IAM::Role":
            docs = [p.get("PolicyDocument", {}) for p in props.get("Policies", [])]
        elif res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            docs = [props.get("PolicyDocument", {})]
        for doc in docs:
            statements = doc.get("Statement", [])
            statements = [statements] if isinstance(statements, dict) else statements
            if any(allows_sign(st) for st in statements):
                holders.add(logical)
    return holders


def role_allows(original: dict, role: str, action: str, resource_suffix: str) -> bool:
    """Whether an Allow statement of `role`'s inline policies names `action` on a resource whose
    (Sub) text ends with `resource_suffix`."""
    props = original.get("Resources", {}).get(role, {}).get("Properties", {})
    for policy in props.get("Policies", []):
        statements = policy.get("PolicyDocument", {}).get("Statement", [])
        for st in [statements] if isinstance(statements, dict) else statements:
            actions = st.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            if st.get("Effect") != "Allow" or action not in actions:
                continue
            resources = st.get("Resource", [])
            resources = resources if isinstance(resources, list) else [resources]
            for r in resources:
                text = r.get("Fn::Sub") if isinstance(r, dict) else r
                text = text[0] if isinstance(text, list) else text
                if isinstance(text, str) and text.endswith(resource_suffix):
                    return True
    return False


def function_crates(repo: str) -> set[str]:
    """Binary names of the crates under functions/ (each packages target/lambda/<bin>/)."""
    names = set()
    base = os.path.join(repo, "functions")
    for entry in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        manifest = os.path.join(base, entry, "Cargo.toml")
        if os.path.isfile(manifest):
            with open(manifest, encoding="utf-8") as f:
                text = f.read()
            bins = re.findall(r'\[\[bin\]\]\s*name\s*=\s*"([^"]+)"', text)
            names.update(bins or re.findall(r'^name\s*=\s*"([^"]+)"', text, re.M)[:1])
    return names


# Properties that give a resource its account-wide (or region-wide) name.
NAME_PROPERTIES = ("QueueName", "BucketName", "TableName", "AliasName", "TopicName", "RoleName",
                   "FunctionName", "LogGroupName", "ScheduleName", "RuleName", "ClusterName",
                   "ServiceName", "Family")


def unprefixed_names(original: dict) -> list[str]:
    """`Logical.Property` of every name that does not include the stack name, so two stacks
    (e.g. two local providers, pec-local and pec-b) would collide on it."""
    bad = []
    for logical, res in sorted(original.get("Resources", {}).items()):
        props = res.get("Properties", {}) or {}
        if res.get("Type") in ("AWS::Lambda::Permission", "AWS::Lambda::EventSourceMapping"):
            continue  # their FunctionName refers to a function; it names nothing
        names = [p for p in NAME_PROPERTIES if p in props]
        if res.get("Type") == "AWS::Events::EventBus" and "Name" in props:
            names.append("Name")
        for prop in names:
            value = props[prop]
            text = value.get("Fn::Sub") if isinstance(value, dict) else None
            text = text[0] if isinstance(text, list) else text
            if not isinstance(text, str) or "${AWS::StackName}" not in text:
                bad.append(f"{logical}.{prop}")
    return bad


def check_invariants(original: dict, transformed: dict, template_path: str) -> list[str]:
    """The template-level rules of ARCHITECTURE.md; returns what was checked."""
    checked = []
    holders = kms_sign_holders(transformed)
    if holders != {"SignFunctionRole"}:
        raise BootstrapError(f"one signer: only SignFunctionRole may allow kms:Sign, found {sorted(holders)}")
    checked.append("one signer: kms:Sign is granted to SignFunctionRole only")
    key_statements = original["Resources"]["SigningKey"]["Properties"]["KeyPolicy"]["Statement"]
    if not any(st.get("Effect") == "Deny" and st.get("Action") == "kms:Sign" for st in key_statements):
        raise BootstrapError("one signer: the SigningKey policy must deny kms:Sign to other principals")
    checked.append("one signer: the key policy denies kms:Sign to every other principal")
    if not role_allows(original, "SignFunctionRole", "s3:GetObject", "/signed/*"):
        raise BootstrapError("SignFunctionRole must allow s3:GetObject on signed/*: the sign step's "
                             "idempotency check is a HeadObject there, which S3 authorises as GetObject")
    checked.append("sign role: can HeadObject (s3:GetObject) the signed/ object it checks")
    repo = os.path.dirname(os.path.abspath(template_path))
    in_template = set()
    for logical, res in original.get("Resources", {}).items():
        if res.get("Type") == "AWS::Serverless::Function":
            m = re.fullmatch(r"target/lambda/([^/]+)/bootstrap\.zip", str(res["Properties"].get("CodeUri", "")))
            if not m:
                raise BootstrapError(f"{logical}: CodeUri must be target/lambda/<function>/bootstrap.zip (infra/package.sh)")
            in_template.add(m.group(1))
            events = res["Properties"].get("Events", {})
            for name, ev in events.items():
                if ev.get("Type") == "SQS" and "ReportBatchItemFailures" not in ev["Properties"].get("FunctionResponseTypes", []):
                    raise BootstrapError(f"{logical}.{name}: SQS events must use ReportBatchItemFailures")
    unprefixed = unprefixed_names(original)
    if unprefixed:
        raise BootstrapError("every resource name must contain ${AWS::StackName} (two providers share one "
                             "account locally): " + ", ".join(unprefixed))
    checked.append("names: every named resource is prefixed with the stack name")
    crates = function_crates(repo)
    if in_template != crates:
        raise BootstrapError(f"function crates {sorted(crates)} and template functions {sorted(in_template)} differ")
    checked.append(f"functions: template and functions/ agree ({', '.join(sorted(crates)) or 'none'})")
    return checked


def snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--template", required=True)
    ap.add_argument("--state-dir", default=None)
    ap.add_argument("--stack-name", default="pec-local")
    ap.add_argument("--parameter", action="append", default=[], help="Key=Value")
    ap.add_argument("--check", action="store_true", help="transform and check coverage; no AWS calls")
    args = ap.parse_args(argv)

    overrides = dict(kv.split("=", 1) for kv in args.parameter)
    original, transformed = load_template(args.template, overrides)
    params = parameters_from(original, overrides)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "eu-south-1"
    resolver = Resolver(args.stack_name, region, params)
    conditions = evaluate_conditions(transformed, resolver)
    rows = check_coverage(transformed, set(Creator.HANDLERS), conditions)
    if args.check:
        print(f"SAM transform: ok ({len(rows)} resources after the transform)")
        for line in check_invariants(original, transformed, args.template):
            print(f"invariant ok: {line}")
        for name, value in sorted(conditions.items()):
            print(f"condition {name}: {str(value).lower()}")
        for logical, rtype, action in rows:
            print(f"  {logical:34} {rtype:28} {action}")
        return 0

    if not args.state_dir:
        raise BootstrapError("--state-dir is required unless --check")
    if not os.environ.get("AWS_ENDPOINT_URL") or not os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"):
        raise BootstrapError("AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_DYNAMODB must point at the emulators "
                             "(eval \"$(infra/local/stack.sh env)\"); refusing to touch a real account")
    # The local profile, then the command line (re-resolved: the check above used the defaults).
    overrides = {**{k: v for k, v in LOCAL_PROFILE.items() if k in original.get("Parameters", {})}, **overrides}
    params = parameters_from(original, overrides)
    resolver = Resolver(args.stack_name, region, params)
    conditions = evaluate_conditions(transformed, resolver)
    creator = Creator(args.stack_name, region)
    handlers = creator.handlers()
    resources = transformed["Resources"]
    created = 0
    for logical in to_create(transformed, set(handlers), conditions):
        res = resources[logical]
        props = resolver.resolve(res.get("Properties", {}))
        resolver.physical[logical] = handlers[res["Type"]](logical, props)
        created += 1

    outputs = {name: resolver.resolve(o["Value"])
               for name, o in outputs_to_write(original, conditions, set(resolver.physical)).items()}
    fn_env = resolver.resolve(original.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}))
    # Each function's environment exactly as Lambda merges it (Globals, then the function's own).
    functions = {}
    for logical, res in original.get("Resources", {}).items():
        if res.get("Type") == "AWS::Serverless::Function":
            own = resolver.resolve(res["Properties"].get("Environment", {}).get("Variables", {}))
            # The queues Lambda would poll for it (its SQS event sources), as URLs.
            queues = []
            for event_name, event in sorted(res["Properties"].get("Events", {}).items()):
                if event.get("Type") != "SQS":
                    continue
                arn = resolver.resolve(event["Properties"]["Queue"])
                url = next((r["QueueUrl"] for r in resolver.physical.values() if r.get("Arn") == arn and "QueueUrl" in r), None)
                if url is None:
                    raise BootstrapError(f"{logical}.{event_name}: queue {arn} is not a queue of this template")
                queues.append({"event": event_name, "queue_url": url,
                               "batch_size": int(event["Properties"].get("BatchSize", 10))})
            functions[logical] = {"environment": {**fn_env, **own}, "queues": queues}
    os.makedirs(args.state_dir, exist_ok=True)
    base = os.path.join(args.state_dir, args.stack_name)
    with open(base + ".resources.json", "w", encoding="utf-8") as f:
        json.dump({"stack": args.stack_name, "region": region, "parameters": params, "outputs": outputs,
                   "resources": resolver.physical, "function_environment": fn_env,
                   "functions": functions}, f, indent=2, sort_keys=True)
    with open(base + ".env", "w", encoding="utf-8") as f:
        f.write(f"# Written by infra/local/bootstrap.py for stack {args.stack_name}.\n")
        for k, v in sorted(fn_env.items()):
            f.write(f"export {k}={shlex.quote(str(v))}\n")
        for k, v in sorted(outputs.items()):
            f.write(f"export PEC_OUTPUT_{snake(k)}={shlex.quote(str(v))}\n")
    print(f"bootstrap: stack {args.stack_name}: {created} resources ready; wrote {base}.resources.json and {base}.env")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BootstrapError as e:
        print(f"bootstrap: error: {e}", file=sys.stderr)
        sys.exit(1)
