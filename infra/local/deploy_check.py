#!/usr/bin/env python3
"""Deploy check: template.yaml through LocalStack's own CloudFormation engine, compared with bootstrap.py.

bootstrap.py creates the runnable local stack resource by resource; this check deploys the same
template as one CloudFormation stack (LocalStack 4.8.1's engine) on fresh emulators and needs
CREATE_COMPLETE. Then every resource both paths create must have the same name and the same key
properties (read back from the emulators), and what only CloudFormation creates (roles, queue
and bucket policies, alarms, schedule rules) must be what the template says, as bootstrap.py's
resolver reads it.

    deploy_check.py --template template.yaml --state-dir DIR [--stack-name pec-cfn]
                    [--bootstrap-stack pec-boot] [--no-bootstrap] [--parameter Key=Value ...]
                    [--keep-type TYPE ...] [--preprocess-only] [--write-template FILE]

infra/local/deploy_check.sh runs it on emulators of its own (started fresh, stopped after).

1. The SAM transform runs here (samtranslator, as in bootstrap.py, managed policy ARNs offline):
   both paths start from the very same transformed template, and the pre-processor sees plain
   CloudFormation types (an AWS::Serverless::Function is a function, its event source mappings,
   permissions and schedule rules: only the pieces LocalStack cannot create go).
2. The parameters (bootstrap.py's LOCAL_PROFILE, then --parameter) are checked against their
   constraints and the template's Rules, which AWS checks and LocalStack does not.
3. Pre-processing removes only the types in REMOVED and the resources whose Condition is false
   (each group printed with its reason). A reference to a removed resource from a remaining one
   is replaced by the value AWS would give it where the template says it (STAND_INS, each
   printed); otherwise the referrer goes too (printed). Outputs naming a removed resource get
   the stand-in or are dropped, DependsOn entries on one are cut (printed). The result must have
   no dependency cycle (LocalStack deploys a DependsOn cycle without a word; AWS refuses it).
4. The stack is created through a change set (the template by TemplateURL from the emulator's
   S3 when over 51200 bytes, as `sam deploy` does), waiting for CREATE_COMPLETE; on failure the
   failed events' reasons are printed.
5. bootstrap.py creates the same template as --bootstrap-stack on the same emulators (unless
   --no-bootstrap: then <state-dir>/<bootstrap-stack>.resources.json must exist). Names are
   compared with each stack name replaced by {stack} and KMS key ids by {key:<logical id>};
   known differences (EXPLAINED) are named under the table; any other one fails the check.

What LocalStack itself catches (measured): a Ref to nothing (ValidationError), a GetAtt of an
attribute that does not exist (the stack fails), invalid IAM policy documents (MalformedPolicy
Document), invalid schedule expressions, and whatever its service APIs refuse. What it does not:
unknown property names (ignored: cfn-lint's E3002 catches them), parameter constraints, Rules,
DependsOn cycles (both checked here), value ranges such as a log group's RetentionInDays.

The emulators must run with STRICT_SERVICE_LOADING=0 (DynamoDB and CloudWatch are not in
stack.sh's SERVICES), CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES=0 (else a type LocalStack lacks
"succeeds" as a no-op and GetAtt on it returns a placeholder) and
PEC_LOCALSTACK_DYNAMODB_URL=<stack.sh's DynamoDB Local> (localstack-init/start.d/
pec_dynamodb_forward.py): deploy_check.sh sets all three. Exit status: 0 clean, 1 a failed
deployment or a difference nobody explained, 2 no emulator endpoints.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bootstrap as bs  # noqa: E402

HERE = Path(__file__).resolve().parent

# Each reason is what LocalStack 4.8.1 answered when the type was kept (--keep-type TYPE).
NO_DOCKER = ("LocalStack runs functions in Docker with a runtime it downloads; here there is neither "
             "(\"Installation of lambda-runtime ... failed\"). The local runner hosts the code")
ON_A_FUNCTION = "it is attached to a Lambda function, which is removed (LocalStack: \"Function {}\")"
NOT_IN_COMMUNITY = ("LocalStack 4.8.1 community has no CloudFormation resource provider for it (\"Resource type "
                    "... not supported\"; with CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES left on it would be a "
                    "silent no-op)")

# The only types taken out of the template, and why. Everything else must deploy.
REMOVED = {
    "AWS::Lambda::Function": NO_DOCKER,
    "AWS::Lambda::EventSourceMapping": ON_A_FUNCTION.format("does not exist"),
    "AWS::Lambda::Permission": ON_A_FUNCTION.format("not found"),
    "AWS::CloudFormation::CustomResource": (NOT_IN_COMMUNITY + "; its ServiceToken is a removed Lambda "
                                            "function anyway"),
    "AWS::SES::EmailIdentity": ("LocalStack 4.8.1's resource provider for it is a stub (create raises "
                                "NotImplementedError: \"Resource provider operation failed: \"); bootstrap.py "
                                "verifies the identity through the SES API instead"),
    "AWS::SES::ReceiptRuleSet": NOT_IN_COMMUNITY + "; receipt rules never run in LocalStack anyway",
    "AWS::SES::ReceiptRule": NOT_IN_COMMUNITY + "; receipt rules never run in LocalStack anyway",
    "AWS::ApiGatewayV2::Api": NOT_IN_COMMUNITY + " (API Gateway v2 is a LocalStack Pro service)",
    "AWS::ApiGatewayV2::Stage": NOT_IN_COMMUNITY + " (API Gateway v2 is a LocalStack Pro service)",
}


def _sub_prefix(value: Any, prefix: str) -> Any:
    """`prefix` + a name given as a literal or a string Fn::Sub, as a Fn::Sub."""
    if isinstance(value, str):
        return {"Fn::Sub": prefix + value.replace("${", "${!")}
    if isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str):
        return {"Fn::Sub": prefix + value["Fn::Sub"]}
    return None


# What AWS would give for a removed resource's Ref / GetAtt, where the template itself says it.
# (removed type, attribute or "Ref") -> function of the removed resource's properties.
STAND_INS: dict[tuple[str, str], Callable[[dict], Any]] = {
    ("AWS::Lambda::Function", "Ref"): lambda p: p.get("FunctionName"),
    ("AWS::Lambda::Function", "Arn"): lambda p: _sub_prefix(
        p.get("FunctionName"), "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:"),
    ("AWS::SES::EmailIdentity", "Ref"): lambda p: p.get("EmailIdentity"),
    ("AWS::SES::ReceiptRuleSet", "Ref"): lambda p: p.get("RuleSetName"),
}

# Only CloudFormation creates these (bootstrap.py skips them, bs.SKIPPED says why); their
# properties are compared with the template resolved by bootstrap.py's own resolver.
TEMPLATE_COMPARED = ("AWS::IAM::Role", "AWS::SQS::QueuePolicy", "AWS::S3::BucketPolicy",
                     "AWS::CloudWatch::Alarm", "AWS::Events::Rule")

# Differences between the two paths that are known: (name, reason, rewrite of the normalized
# (bootstrap or template side, deploy side) snapshots). A row whose differences all vanish under
# these is "explained" and names them; the reasons are printed under the table.
EXPLAINED: list[tuple[str, str, Callable[[Any, Any, str], tuple[Any, Any]]]] = []


def _explain(name: str, reason: str):
    def wrap(fn):
        EXPLAINED.append((name, reason, fn))
        return fn
    return wrap


@_explain("ddblocal-arn", "DynamoDB Local names every table ARN with the region `ddblocal`; bootstrap.py "
          "records the ARNs it returns (iam_check.py expects that), LocalStack rewrites them to the "
          "stack's region as AWS has them")
def _ddblocal(expected: Any, actual: Any, region: str) -> tuple[Any, Any]:
    return _map_strings(expected, lambda s: s.replace("arn:aws:dynamodb:ddblocal:", f"arn:aws:dynamodb:{region}:")), actual


# Bucket properties LocalStack 4.8.1's AWS::S3::Bucket provider does not apply (its create() sets
# notifications, versioning, CORS, Object Lock, tags and website only).
S3_IGNORED_BY_LOCALSTACK = ("Lifecycle", "Encryption", "PublicAccessBlock", "Ownership")


@_explain("localstack-s3-bucket-provider", "LocalStack 4.8.1's AWS::S3::Bucket resource provider applies only "
          "NotificationConfiguration, VersioningConfiguration, CorsConfiguration, ObjectLockConfiguration, Tags "
          "and WebsiteConfiguration: LifecycleConfiguration is dropped, and BucketEncryption, "
          "PublicAccessBlockConfiguration and OwnershipControls match only because LocalStack's defaults for a "
          "new bucket (SSE-S3, all public access blocked, BucketOwnerEnforced) equal the template's. Not compared")
def _s3_ignored(expected: Any, actual: Any, region: str) -> tuple[Any, Any]:
    if isinstance(expected, dict) and isinstance(actual, dict) and "ObjectLock" in expected and "Notifications" in expected:
        expected = {k: v for k, v in expected.items() if k not in S3_IGNORED_BY_LOCALSTACK}
        actual = {k: v for k, v in actual.items() if k not in S3_IGNORED_BY_LOCALSTACK}
    return expected, actual


@_explain("bootstrap-rule-ref", "bootstrap.py gives an EventBridge rule on a custom bus the Ref <rule name>; "
          "CloudFormation (AWS and LocalStack) gives <bus name>|<rule name>. Nothing in the template uses !Ref "
          "of a rule today; bootstrap.py's rule() should return the AWS form")
def _rule_ref(expected: Any, actual: Any, region: str) -> tuple[Any, Any]:
    if isinstance(expected, dict) and isinstance(actual, dict) and "EventPattern" in expected \
            and isinstance(actual.get("Ref"), str) and "|" in actual["Ref"] \
            and actual["Ref"].split("|", 1)[1] == expected.get("Ref"):
        expected = {**expected, "Ref": actual["Ref"]}
    return expected, actual


class CheckError(Exception):
    pass


# ----------------------------------------------------------------------------- pre-processing


def _walk_refs(value: Any, fn: Callable[[str, str], Any | None]) -> Any:
    """A copy of `value` with each Ref/GetAtt/${...} of a logical id replaced where
    fn(logical, attr) returns a replacement (attr "Ref" for Ref)."""
    if isinstance(value, list):
        return [_walk_refs(v, fn) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (key, arg), = value.items()
        if key == "Ref" and isinstance(arg, str):
            rep = fn(arg, "Ref")
            return value if rep is None else rep
        if key == "Fn::GetAtt":
            name, attr = arg.split(".", 1) if isinstance(arg, str) else arg
            rep = fn(name, attr)
            return value if rep is None else rep
        if key == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], dict(arg[1]))
            variables = {k: _walk_refs(v, fn) for k, v in variables.items()}
            added: dict[str, Any] = {}

            def repl(m: re.Match) -> str:
                token = m.group(1)
                if token.startswith("!") or token in variables:
                    return m.group(0)
                name, _, attr = token.partition(".")
                rep = fn(name, attr or "Ref")
                if rep is None:
                    return m.group(0)
                var = "PecStandIn" + re.sub(r"[^A-Za-z0-9]", "", token)
                added[var] = rep
                return "${" + var + "}"

            new_text = re.sub(r"\$\{([^}]+)\}", repl, text)
            if not added and not variables:
                return {"Fn::Sub": new_text}
            return {"Fn::Sub": [new_text, {**variables, **added}]}
    return {k: _walk_refs(v, fn) for k, v in value.items()}


FALSE_CONDITION = ("its Condition is false with these parameters, so CloudFormation creates nothing for it; "
                   "LocalStack 4.8.1's engine (v2) still resolves such resources' GetAtt/Sub and fails the "
                   "stack (\"No deployed instances of resource 'EdgeLogGroup' were found\")")


def preprocess(transformed: dict, keep_types: set[str], conditions: dict[str, bool],
               log: Callable[[str], None]) -> tuple[dict, dict[str, str]]:
    """The template LocalStack gets, and {removed logical id: reason}."""
    tpl = copy.deepcopy(transformed)
    tpl.pop("Transform", None)
    resources = tpl["Resources"]
    removed: dict[str, str] = {}
    removed_props: dict[str, tuple[str, dict]] = {}
    by_condition: dict[str, list[str]] = {}
    for logical, res in sorted(resources.items()):
        cond = res.get("Condition")
        if cond is not None and not conditions[cond]:
            by_condition.setdefault(cond, []).append(logical)
    for cond, logicals in sorted(by_condition.items()):
        for logical in logicals:
            res = resources.pop(logical)
            removed[logical] = f"condition {cond} is false"
            removed_props[logical] = (res["Type"], res.get("Properties", {}))
        log(f"  removed x{len(logicals)} under condition {cond}: {FALSE_CONDITION}\n      {', '.join(logicals)}")
    for name in sorted(tpl.get("Outputs", {})):
        cond = tpl["Outputs"][name].get("Condition")
        if cond is not None and not conditions[cond]:
            del tpl["Outputs"][name]
            log(f"  output {name} dropped: condition {cond} is false")
    by_type: dict[str, list[str]] = {}
    for logical in sorted(resources):
        if resources[logical]["Type"] not in REMOVED or resources[logical]["Type"] in keep_types:
            continue
        res = resources.pop(logical)
        removed[logical] = f"{res['Type']}: {REMOVED[res['Type']]}"
        removed_props[logical] = (res["Type"], res.get("Properties", {}))
        by_type.setdefault(res["Type"], []).append(logical)
    for rtype, logicals in sorted(by_type.items()):
        log(f"  removed {rtype} x{len(logicals)}: {REMOVED[rtype]}\n      {', '.join(logicals)}")

    # References to removed resources from the remaining ones: a stand-in, or the referrer goes too.
    changed = True
    while changed:
        changed = False
        for logical in sorted(resources):
            res = resources[logical]
            refs = bs.references(res.get("Properties", {})) & set(removed)
            if not refs:
                continue
            missing: list[str] = []

            def stand_in(name: str, attr: str) -> Any | None:
                if name not in removed:
                    return None
                rtype, props = removed_props[name]
                maker = STAND_INS.get((rtype, attr))
                value = maker(props) if maker else None
                if value is None:
                    missing.append(f"{name}.{attr}" if attr != "Ref" else name)
                    return None
                log(f"  {logical}: {'!Ref ' + name if attr == 'Ref' else '!GetAtt ' + name + '.' + attr}"
                    f" -> {json.dumps(value)} (the value AWS gives it; {name} is removed)")
                return value

            new_props = _walk_refs(res.get("Properties", {}), stand_in)
            if missing:
                reason = f"refers to {', '.join(sorted(set(missing)))}, removed, with no stand-in"
                removed[logical] = reason
                removed_props[logical] = (res["Type"], res.get("Properties", {}))
                del resources[logical]
                log(f"  removed {logical} ({res['Type']}): {reason}")
                changed = True
            else:
                res["Properties"] = new_props

    for logical, res in sorted(resources.items()):
        dep = res.get("DependsOn")
        if dep is None:
            continue
        deps = [dep] if isinstance(dep, str) else list(dep)
        cut = [d for d in deps if d in removed]
        if cut:
            kept = [d for d in deps if d not in removed]
            if kept:
                res["DependsOn"] = kept
            else:
                del res["DependsOn"]
            log(f"  {logical}: DependsOn {', '.join(cut)} cut (removed)")
    for name in sorted(tpl.get("Outputs", {})):
        output = tpl["Outputs"][name]
        refs = bs.references(output.get("Value")) & set(removed)
        if not refs:
            continue
        missing = []

        def output_stand_in(ref: str, attr: str) -> Any | None:
            if ref not in removed:
                return None
            maker = STAND_INS.get((removed_props[ref][0], attr))
            value = maker(removed_props[ref][1]) if maker else None
            if value is None:
                missing.append(ref if attr == "Ref" else f"{ref}.{attr}")
            return value

        value = _walk_refs(output.get("Value"), output_stand_in)
        if missing:
            del tpl["Outputs"][name]
            log(f"  output {name} dropped: names {', '.join(sorted(set(missing)))} (removed, no stand-in)")
        else:
            output["Value"] = value
            log(f"  output {name}: {', '.join(sorted(refs))} replaced by the value AWS gives it -> {json.dumps(value)}")
    return tpl, removed


# ----------------------------------------------------------------------------- parameters


def check_parameters(template: dict, values: dict[str, Any]) -> list[str]:
    """What CloudFormation checks before it creates anything and LocalStack 4.8.1 does not (it
    accepts any value, and ignores Rules): each parameter's constraints, then the Rules'
    assertions. Returns the problems, AWS's wording where it has one."""
    problems = []
    for name, spec in template.get("Parameters", {}).items():
        value = values[name]
        ptype = spec.get("Type", "String")
        items = [v.strip() for v in str(value).split(",")] if ptype.startswith("CommaDelimitedList") or ptype.startswith("List<") else [str(value)]
        for item in items:
            if "AllowedValues" in spec and item not in [str(v) for v in spec["AllowedValues"]]:
                problems.append(f"parameter {name}: {item!r} is not one of {spec['AllowedValues']}")
            if "AllowedPattern" in spec and not re.fullmatch(spec["AllowedPattern"], item):
                problems.append(f"parameter {name}: {item!r} does not match AllowedPattern {spec['AllowedPattern']}")
            if "MinLength" in spec and len(item) < int(spec["MinLength"]):
                problems.append(f"parameter {name}: shorter than MinLength {spec['MinLength']}")
            if "MaxLength" in spec and len(item) > int(spec["MaxLength"]):
                problems.append(f"parameter {name}: longer than MaxLength {spec['MaxLength']}")
            if ptype == "Number":
                try:
                    number = float(item)
                except ValueError:
                    problems.append(f"parameter {name}: {item!r} is not a number")
                    continue
                if "MinValue" in spec and number < float(spec["MinValue"]):
                    problems.append(f"parameter {name}: {item} is below MinValue {spec['MinValue']}")
                if "MaxValue" in spec and number > float(spec["MaxValue"]):
                    problems.append(f"parameter {name}: {item} is above MaxValue {spec['MaxValue']}")

    def ev(expr: Any) -> Any:
        if not isinstance(expr, dict) or len(expr) != 1:
            return expr
        (fn, arg), = expr.items()
        if fn == "Ref":
            spec = template["Parameters"][arg]
            v = values[arg]
            listy = spec.get("Type", "String").startswith(("CommaDelimitedList", "List<"))
            return [x.strip() for x in str(v).split(",")] if listy else str(v)
        if fn == "Fn::Equals":
            return str(ev(arg[0])) == str(ev(arg[1]))
        if fn == "Fn::Not":
            return not ev(arg[0])
        if fn == "Fn::And":
            return all(ev(a) for a in arg)
        if fn == "Fn::Or":
            return any(ev(a) for a in arg)
        if fn == "Fn::Contains":
            return str(ev(arg[1])) in [str(x) for x in ev(arg[0])]
        raise CheckError(f"Rules: {fn} is not supported by deploy_check.py; extend check_parameters")

    for rule_name, rule in (template.get("Rules") or {}).items():
        if "RuleCondition" in rule and not ev(rule["RuleCondition"]):
            continue
        for assertion in rule.get("Assertions", []):
            if not ev(assertion["Assert"]):
                problems.append(f"rule {rule_name}: {assertion.get('AssertDescription', 'assertion failed')}")
    return problems


# ----------------------------------------------------------------------------- deployment


def aws_clients(region: str) -> dict[str, Any]:
    import boto3

    ls = os.environ["AWS_ENDPOINT_URL"]
    ddb = os.environ["AWS_ENDPOINT_URL_DYNAMODB"]
    c = {svc: boto3.client(svc, endpoint_url=ls, region_name=region)
         for svc in ("cloudformation", "sqs", "s3", "kms", "events", "sns", "iam", "cloudwatch", "ses")}
    # Tables: the deployed stack's through LocalStack (which forwards to DynamoDB Local under its
    # own per-account key), bootstrap.py's in DynamoDB Local directly, as the functions see them.
    c["dynamodb_deploy"] = boto3.client("dynamodb", endpoint_url=ls, region_name=region)
    c["dynamodb_bootstrap"] = boto3.client("dynamodb", endpoint_url=ddb, region_name=region)
    return c


def upload_template(s3, stack: str, region: str, body: str) -> str:
    """The template in an S3 bucket of the emulator, as `sam deploy` does: a body over 51200
    bytes must come by TemplateURL (LocalStack enforces the limit too). The bucket is not part of
    any stack."""
    bucket = f"{stack}-deploy-check-templates"
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except Exception as e:
        if not _client_error(e, "BucketAlreadyOwnedByYou"):
            raise
    key = f"{stack}.template.json"
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode("utf-8"))
    return f"{os.environ['AWS_ENDPOINT_URL'].rstrip('/')}/{bucket}/{key}"


def upload_artifacts(s3, region: str, template: dict) -> None:
    """What `sam package` uploads besides the functions' code: each layer's zip, at the S3
    location the transform gave it (LocalStack's PublishLayerVersion reads it). The built zip
    when infra/package.sh has made it, otherwise a placeholder (the check is about the template,
    not the layer's content: infra/antivirus/layer-test.sh tests that)."""
    import io
    import zipfile

    for logical, res in sorted(template.get("Resources", {}).items()):
        if res.get("Type") != "AWS::Lambda::LayerVersion":
            continue
        content = res.get("Properties", {}).get("Content", {})
        bucket, key = content.get("S3Bucket"), content.get("S3Key")
        if not isinstance(bucket, str) or not isinstance(key, str):
            raise CheckError(f"{logical}: Content is not a literal S3 location: {content}")
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            s3.create_bucket(**kwargs)
        except Exception as e:
            if not _client_error(e, "BucketAlreadyOwnedByYou"):
                raise
        built = REPO / key
        if built.is_file():
            body = built.read_bytes()
            what = f"{key} ({len(body)} bytes, built)"
        else:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.writestr("README", "placeholder for the deploy check: the layer is built by infra/package.sh\n")
            body = buf.getvalue()
            what = f"a placeholder for {key} (not built here)"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        print(f"deploy: {logical}: uploaded {what} to s3://{bucket}/{key}")


def stack_resources(cfn, stack: str) -> dict[str, dict]:
    resources = {}
    for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack):
        for r in page["StackResourceSummaries"]:
            resources[r["LogicalResourceId"]] = r
    return resources


def stack_exists(cfn, stack: str) -> str | None:
    try:
        return cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
    except Exception as e:
        if _client_error(e, "ValidationError", "ResourceNotFoundException"):
            return None
        raise


def deploy(cfn, s3, stack: str, region: str, template: dict, parameters: dict[str, str],
           timeout: float) -> dict[str, dict]:
    """Creates the stack through a change set; returns {logical id: StackResource}."""
    status = stack_exists(cfn, stack)
    if status is not None:
        raise CheckError(f"stack {stack} already exists ({status}): the check creates it on a fresh emulator "
                         "(a failed create leaves orphans in LocalStack; restart the emulators)")
    upload_artifacts(s3, region, template)
    body = json.dumps(template, separators=(",", ":"))
    source: dict[str, str] = {"TemplateBody": body}
    if len(body) > 51200:
        source = {"TemplateURL": upload_template(s3, stack, region, body)}
        print(f"deploy: template {len(body)} bytes, over the 51200 of an inline body: uploaded, {source['TemplateURL']}")
    try:
        cfn.create_change_set(
            StackName=stack, ChangeSetName=f"{stack}-create", ChangeSetType="CREATE", **source,
            Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in sorted(parameters.items())],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
        )
    except Exception as e:
        if _client_error(e, "ValidationError", "InsufficientCapabilitiesException"):
            raise CheckError(f"CloudFormation refused the template: {e.response['Error']['Message']}") from None
        raise
    deadline = time.monotonic() + timeout
    while True:
        cs = cfn.describe_change_set(StackName=stack, ChangeSetName=f"{stack}-create")
        if cs["Status"] == "CREATE_COMPLETE":
            break
        if cs["Status"] == "FAILED" or time.monotonic() > deadline:
            raise CheckError(f"change set {cs['Status']}: {cs.get('StatusReason', '')}")
        time.sleep(0.5)
    print(f"deploy: change set ready, {len(cs.get('Changes', []))} changes; executing")
    cfn.execute_change_set(StackName=stack, ChangeSetName=f"{stack}-create")
    while True:
        st = cfn.describe_stacks(StackName=stack)["Stacks"][0]
        status = st["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            break
        if time.monotonic() > deadline:
            raise CheckError(f"stack still {status} after {timeout:.0f} s")
        time.sleep(1)
    if status != "CREATE_COMPLETE":
        events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
        failed = [e for e in events if e.get("ResourceStatus", "").endswith("FAILED")]
        # The events with a reason first (the others are the stack's own and resources cancelled).
        failed = [e for e in failed if e.get("ResourceStatusReason")] or failed
        lines = [f"  {e['LogicalResourceId']} ({e.get('ResourceType')}): {e.get('ResourceStatus')}: "
                 f"{e.get('ResourceStatusReason', '')}" for e in reversed(failed)]
        raise CheckError(f"stack {stack} ended {status} ({st.get('StackStatusReason', '')}); failed events:\n"
                         + "\n".join(lines or ["  (none recorded)"]))
    resources = stack_resources(cfn, stack)
    bad = {k: r["ResourceStatus"] for k, r in resources.items() if r["ResourceStatus"] != "CREATE_COMPLETE"}
    if bad:
        raise CheckError(f"stack CREATE_COMPLETE but resources not: {bad}")
    return resources


# ----------------------------------------------------------------------------- snapshots


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {(fn(k) if isinstance(k, str) else k): _map_strings(v, fn) for k, v in value.items()}
    return value


def _canon(value: Any) -> Any:
    """Numbers as floats and JSON-in-strings parsed, so 5, 5.0 and "5" compare equal only where
    the API itself returns text (queue attributes stay strings on both sides)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    return value


def _client_error(e: Exception, *codes: str) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(e, ClientError) and e.response["Error"]["Code"] in codes


class Snapshot:
    """Key properties of live resources, read back from the emulators (not from the template)."""

    QUEUE_ATTRS_IGNORED = {"CreatedTimestamp", "LastModifiedTimestamp", "Policy",
                           "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                           "ApproximateNumberOfMessagesDelayed"}

    def __init__(self, clients: dict[str, Any]):
        self.c = clients

    def queue(self, url: str, **_) -> dict:
        attrs = self.c["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        out = {k: v for k, v in attrs.items() if k not in self.QUEUE_ATTRS_IGNORED}
        if "RedrivePolicy" in out:
            rp = json.loads(out["RedrivePolicy"])
            rp["maxReceiveCount"] = int(rp["maxReceiveCount"])
            out["RedrivePolicy"] = rp
        return {"name": url.rsplit("/", 1)[-1], "url": url, **out}

    def bucket(self, name: str, **_) -> dict:
        s3 = self.c["s3"]
        out: dict[str, Any] = {"name": name}
        v = s3.get_bucket_versioning(Bucket=name)
        out["Versioning"] = v.get("Status")
        try:
            olc = s3.get_object_lock_configuration(Bucket=name)["ObjectLockConfiguration"]
        except Exception as e:
            if not _client_error(e, "ObjectLockConfigurationNotFoundError"):
                raise
            olc = None
        out["ObjectLock"] = olc
        n = s3.get_bucket_notification_configuration(Bucket=name)
        out["Notifications"] = sorted(
            ({"QueueArn": q["QueueArn"], "Events": sorted(q["Events"]),
              "Filter": sorted((r["Name"].lower(), r["Value"]) for r in q.get("Filter", {}).get("Key", {}).get("FilterRules", []))}
             for q in n.get("QueueConfigurations", [])),
            key=json.dumps)
        for kind in ("TopicConfigurations", "LambdaFunctionConfigurations", "EventBridgeConfiguration"):
            if n.get(kind):
                out[kind] = n[kind]
        try:
            enc = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
            out["Encryption"] = [r["ApplyServerSideEncryptionByDefault"] | (
                {"BucketKeyEnabled": r["BucketKeyEnabled"]} if r.get("BucketKeyEnabled") else {}) for r in enc]
        except Exception as e:
            if not _client_error(e, "ServerSideEncryptionConfigurationNotFoundError"):
                raise
            out["Encryption"] = None
        try:
            out["PublicAccessBlock"] = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
        except Exception as e:
            if not _client_error(e, "NoSuchPublicAccessBlockConfiguration"):
                raise
            out["PublicAccessBlock"] = None
        try:
            out["Ownership"] = s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"]
        except Exception as e:
            if not _client_error(e, "OwnershipControlsNotFoundError"):
                raise
            out["Ownership"] = None
        try:
            rules = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
        except Exception as e:
            if not _client_error(e, "NoSuchLifecycleConfiguration"):
                raise
            rules = []
        out["Lifecycle"] = sorted(
            ({"ID": r.get("ID"), "Status": r["Status"],
              "Prefix": r.get("Filter", {}).get("Prefix", r.get("Prefix", "")),
              "ExpirationDays": r.get("Expiration", {}).get("Days"),
              "NoncurrentDays": r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")} for r in rules),
            key=lambda r: str(r["ID"]))
        return out

    def _table(self, client, name: str) -> dict:
        t = client.describe_table(TableName=name)["Table"]
        ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        return {
            "name": name,
            "Arn": t["TableArn"],
            "KeySchema": t["KeySchema"],
            "AttributeDefinitions": sorted(t["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
            "BillingMode": t.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED"),
            "GlobalSecondaryIndexes": sorted(
                ({"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
                 for g in t.get("GlobalSecondaryIndexes", [])), key=lambda g: g["IndexName"]),
            "Stream": t.get("StreamSpecification"),
            "TimeToLive": (ttl.get("AttributeName"), ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")),
        }

    def table_deploy(self, name: str, **_) -> dict:
        return self._table(self.c["dynamodb_deploy"], name)

    def table_bootstrap(self, name: str, **_) -> dict:
        return self._table(self.c["dynamodb_bootstrap"], name)

    def key(self, key_id: str, **_) -> dict:
        kms = self.c["kms"]
        m = kms.describe_key(KeyId=key_id)["KeyMetadata"]
        policy = json.loads(kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
        return {"KeySpec": m.get("KeySpec"), "KeyUsage": m.get("KeyUsage"), "Description": m.get("Description"),
                "Enabled": m.get("Enabled"), "KeyState": m.get("KeyState"), "KeyPolicy": policy}

    def alias(self, name: str, **_) -> dict:
        for page in self.c["kms"].get_paginator("list_aliases").paginate():
            for a in page["Aliases"]:
                if a["AliasName"] == name:
                    return {"name": name, "TargetKeyId": a.get("TargetKeyId")}
        raise CheckError(f"KMS alias {name} not found")

    def event_bus(self, name: str, **_) -> dict:
        b = self.c["events"].describe_event_bus(Name=name)
        return {"name": b["Name"], "Arn": b["Arn"]}

    def rule(self, physical: str, bus: str | None = None, **_) -> dict:
        events = self.c["events"]
        name = physical
        if physical.startswith("arn:"):
            parts = physical.split(":rule/", 1)[1].split("/")
            bus, name = (parts[0], parts[1]) if len(parts) == 2 else ("default", parts[0])
        elif "|" in physical:
            bus, name = physical.split("|", 1)
        r = events.describe_rule(Name=name, EventBusName=bus or "default")
        targets = events.list_targets_by_rule(Rule=name, EventBusName=bus or "default")["Targets"]
        return {"name": r["Name"], "EventBusName": r.get("EventBusName"),
                "EventPattern": json.loads(r["EventPattern"]) if r.get("EventPattern") else None,
                "ScheduleExpression": r.get("ScheduleExpression"), "State": r.get("State"),
                "Targets": sorted(({"Id": t["Id"], "Arn": t["Arn"]} for t in targets), key=lambda t: t["Id"])}

    def topic(self, arn: str, **_) -> dict:
        self.c["sns"].get_topic_attributes(TopicArn=arn)
        return {"name": arn.rsplit(":", 1)[-1], "Arn": arn}

    def role(self, name: str, **_) -> dict:
        iam = self.c["iam"]
        r = iam.get_role(RoleName=name)["Role"]
        names = [n for page in iam.get_paginator("list_role_policies").paginate(RoleName=name) for n in page["PolicyNames"]]
        inline = {n: iam.get_role_policy(RoleName=name, PolicyName=n)["PolicyDocument"] for n in names}
        attached = sorted(p["PolicyArn"] for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=name)
                          for p in page["AttachedPolicies"])
        return {"name": r["RoleName"], "AssumeRolePolicyDocument": r["AssumeRolePolicyDocument"],
                "ManagedPolicyArns": attached, "Policies": inline}

    def queue_policy(self, queue_urls: list[str], **_) -> dict:
        out = {}
        for url in queue_urls:
            attrs = self.c["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])["Attributes"]
            out[url] = json.loads(attrs["Policy"]) if "Policy" in attrs else None
        return {"Policies": out}

    def bucket_policy(self, bucket: str, **_) -> dict:
        try:
            doc = json.loads(self.c["s3"].get_bucket_policy(Bucket=bucket)["Policy"])
        except Exception as e:
            if not _client_error(e, "NoSuchBucketPolicy"):
                raise
            doc = None
        return {"Bucket": bucket, "PolicyDocument": doc}

    ALARM_FIELDS = ("AlarmDescription", "Namespace", "MetricName", "Dimensions", "Statistic", "Period",
                    "EvaluationPeriods", "Threshold", "ComparisonOperator", "TreatMissingData", "AlarmActions")

    def alarm(self, name: str, **_) -> dict:
        alarms = self.c["cloudwatch"].describe_alarms(AlarmNames=[name])["MetricAlarms"]
        if not alarms:
            raise CheckError(f"alarm {name} not found")
        a = alarms[0]
        return {k: a.get(k) for k in self.ALARM_FIELDS if a.get(k) not in (None, [])}


# ----------------------------------------------------------------------------- comparison


def diff(a: Any, b: Any, path: str = "", left: str = "bootstrap") -> list[str]:
    """Where `a` (bootstrap's resource, or the template as bootstrap.py resolves it: `left`) and
    `b` (the deployed resource) differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a:
                out.append(f"{path}/{k}: only in deploy = {json.dumps(b[k], default=str)[:160]}")
            elif k not in b:
                out.append(f"{path}/{k}: only in {left} = {json.dumps(a[k], default=str)[:160]}")
            else:
                out += diff(a[k], b[k], f"{path}/{k}", left)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]", left)]
    if a != b:
        return [f"{path or '/'}: {left} {json.dumps(a, default=str)[:200]} != deploy {json.dumps(b, default=str)[:200]}"]
    return []


class Normalizer:
    """Stack names -> {stack}; KMS key ids -> {key:<logical>} (they are random on each side)."""

    def __init__(self, stack: str, key_ids: dict[str, str]):
        self.stack = stack
        self.key_ids = key_ids

    def __call__(self, value: Any) -> Any:
        def fix(s: str) -> str:
            for key_id, logical in self.key_ids.items():
                s = s.replace(key_id, "{key:" + logical + "}")
            return re.sub(r"(?<![A-Za-z0-9])" + re.escape(self.stack) + r"(?![A-Za-z0-9])", "{stack}", s)
        return _canon(_map_strings(value, fix))


def expected_from_template(rtype: str, props: dict, boot: dict, region: str) -> dict:
    """What the template says, resolved by bootstrap.py's resolver over bootstrap's resources."""
    resolver = bs.Resolver(boot["stack"], region, boot["parameters"])
    resolver.physical = boot["resources"]
    bs.evaluate_conditions(boot["_transformed"], resolver)
    p = resolver.resolve(props)
    if rtype == "AWS::IAM::Role":
        return {"name": p["RoleName"], "AssumeRolePolicyDocument": p["AssumeRolePolicyDocument"],
                "ManagedPolicyArns": sorted(p.get("ManagedPolicyArns", [])),
                "Policies": {x["PolicyName"]: x["PolicyDocument"] for x in p.get("Policies", [])}}
    if rtype == "AWS::SQS::QueuePolicy":
        return {"Policies": {url: p["PolicyDocument"] for url in p["Queues"]}}
    if rtype == "AWS::S3::BucketPolicy":
        return {"Bucket": p["Bucket"], "PolicyDocument": p["PolicyDocument"]}
    if rtype == "AWS::CloudWatch::Alarm":
        return {k: p[k] for k in Snapshot.ALARM_FIELDS if k in p}
    if rtype == "AWS::Events::Rule":  # a schedule rule: its name is generated, its target stood in
        return {"ScheduleExpression": p.get("ScheduleExpression"), "EventPattern": p.get("EventPattern"),
                "State": p.get("State", "ENABLED"),
                "Targets": sorted(({"Id": t["Id"], "Arn": t["Arn"]} for t in p.get("Targets", [])), key=lambda t: t["Id"])}
    raise CheckError(f"no template comparison for {rtype}")


def snapshot_of(snap: Snapshot, rtype: str, side: str, physical: dict[str, Any], props_deploy: dict,
                deploy_physical: dict[str, str]) -> dict | None:
    """Live key properties of one resource; `physical` has Ref (and Arn, ...) of it."""
    ref = physical["Ref"]
    if rtype == "AWS::SQS::Queue":
        return snap.queue(ref)
    if rtype == "AWS::S3::Bucket":
        return snap.bucket(ref)
    if rtype == "AWS::DynamoDB::Table":
        return snap.table_bootstrap(ref) if side == "bootstrap" else snap.table_deploy(ref)
    if rtype == "AWS::KMS::Key":
        return snap.key(ref)
    if rtype == "AWS::KMS::Alias":
        return snap.alias(ref)
    if rtype == "AWS::Events::EventBus":
        return snap.event_bus(ref)
    if rtype == "AWS::Events::Rule":
        bus = physical.get("EventBusName")
        return snap.rule(physical.get("Arn") or ref, bus=bus)
    if rtype == "AWS::SNS::Topic":
        return snap.topic(ref)
    if rtype == "AWS::IAM::Role":
        return snap.role(ref)
    if rtype == "AWS::SQS::QueuePolicy":
        return snap.queue_policy([deploy_physical[q["Ref"]] for q in props_deploy["Queues"]])
    if rtype == "AWS::S3::BucketPolicy":
        return snap.bucket_policy(deploy_physical[props_deploy["Bucket"]["Ref"]])
    if rtype == "AWS::CloudWatch::Alarm":
        return snap.alarm(ref)
    return None


def compare(transformed: dict, processed: dict, removed: dict[str, str], deployed: dict[str, dict],
            boot: dict, region: str, deploy_stack: str, clients: dict[str, Any]) -> int:
    snap = Snapshot(clients)
    resources = transformed["Resources"]
    boot_res = boot["resources"]
    deploy_physical = {k: r["PhysicalResourceId"] for k, r in deployed.items()}
    resolver = bs.Resolver(boot["stack"], region, boot["parameters"])
    conditions = bs.evaluate_conditions(transformed, resolver)
    coverage = {logical: action for logical, _, action in bs.check_coverage(transformed, set(bs.Creator.HANDLERS), conditions)}

    key_logicals = [k for k, r in resources.items() if r["Type"] == "AWS::KMS::Key"]
    norm_boot = Normalizer(boot["stack"], {boot_res[k]["Ref"]: k for k in key_logicals if k in boot_res})
    norm_deploy = Normalizer(deploy_stack, {deploy_physical[k]: k for k in key_logicals if k in deploy_physical})

    rows: list[tuple[str, str, str, str, str]] = []
    failures = 0
    explained_used: set[str] = set()

    def judge(expected: Any, actual: Any, left: str = "bootstrap") -> tuple[str, list[str]]:
        d = diff(expected, actual, left=left)
        if not d:
            return "same", []
        used = []
        for name, _, fn in EXPLAINED:
            fixed = fn(expected, actual, region)
            if diff(*fixed, left=left) != d:
                used.append(name)
                expected, actual = fixed
                d = diff(expected, actual, left=left)
                if not d:
                    explained_used.update(used)
                    return f"explained ({', '.join(used)})", []
        return "DIFF", d

    details: list[str] = []
    for logical in sorted(resources):
        res = resources[logical]
        rtype = res["Type"]
        action = coverage.get(logical, "")
        in_boot = logical in boot_res
        in_deploy = logical in deployed
        name_b = norm_boot(boot_res[logical]["Ref"]) if in_boot else ""
        name_d = norm_deploy(deploy_physical[logical]) if in_deploy else ""
        if action.startswith("skip: condition") and not in_deploy and not in_boot:
            continue  # neither creates it, as in AWS with these parameters
        try:
            if in_boot and in_deploy:
                physical_d = {"Ref": deploy_physical[logical]}
                b = norm_boot({"Ref": boot_res[logical]["Ref"],
                               **snapshot_of(snap, rtype, "bootstrap", boot_res[logical], {}, {})})
                a = norm_deploy({"Ref": deploy_physical[logical],
                                 **snapshot_of(snap, rtype, "deploy", physical_d,
                                               processed["Resources"][logical].get("Properties", {}), deploy_physical)})
                verdict, d = judge(b, a)
                if verdict == "DIFF":
                    failures += 1
                    details += [f"{logical}: {x}" for x in d]
                rows.append((logical, rtype, name_b, name_d, verdict))
            elif in_deploy and rtype in TEMPLATE_COMPARED:
                # The processed properties: the template's, with the stand-ins the deployment got.
                props_d = processed["Resources"][logical].get("Properties", {})
                expected = norm_boot(expected_from_template(rtype, props_d, boot, region))
                actual = norm_deploy(snapshot_of(snap, rtype, "deploy", {"Ref": deploy_physical[logical]}, props_d, deploy_physical))
                actual = {k: v for k, v in actual.items() if k in expected}
                verdict, d = judge(expected, actual, left="template")
                if verdict == "DIFF":
                    failures += 1
                    details += [f"{logical}: {x}" for x in d]
                    verdict = "DIFF vs template"
                else:
                    verdict = f"deploy only; {verdict} as the template says"
                rows.append((logical, rtype, "-", name_d, verdict))
            elif in_deploy:
                why = action[len("skip: "):] if action.startswith("skip: ") else "bootstrap.py does not create it"
                if action == "create":
                    failures += 1
                    rows.append((logical, rtype, "MISSING", name_d, "DIFF: bootstrap.py should have created it"))
                else:
                    rows.append((logical, rtype, "-", name_d, f"deploy only (bootstrap: {why})"))
            elif in_boot:
                if logical in removed:
                    rows.append((logical, rtype, name_b, "-", f"bootstrap only (removed from the deploy: {removed[logical].split(': ', 1)[0]})"))
                else:
                    failures += 1
                    rows.append((logical, rtype, name_b, "MISSING", "DIFF: not in the deployed stack"))
            else:
                if logical in removed:
                    rows.append((logical, rtype, "-", "-", "neither (removed from the deploy; bootstrap: "
                                 + (action[len("skip: "):] if action.startswith("skip: ") else action) + ")"))
                elif action.startswith("skip: condition"):
                    continue
                else:
                    failures += 1
                    rows.append((logical, rtype, "-", "MISSING", "DIFF: the deploy did not create it"))
        except (bs.BootstrapError, CheckError) as e:
            failures += 1
            rows.append((logical, rtype, name_b or "-", name_d or "-", f"DIFF: cannot compare: {e}"))
        except Exception as e:  # an API error reading a resource back is a finding too
            failures += 1
            rows.append((logical, rtype, name_b or "-", name_d or "-", f"DIFF: reading it back failed: {type(e).__name__}: {e}"))

    w = [max(len(r[i]) for r in rows + [("logical id", "type", "bootstrap name", "deploy name", "")]) for i in range(4)]
    w = [min(x, 46) for x in w]
    print()
    print(f"{'logical id':{w[0]}}  {'type':{w[1]}}  {'bootstrap name':{w[2]}}  {'deploy name':{w[3]}}  result")
    for r in rows:
        print(f"{r[0]:{w[0]}}  {r[1]:{w[1]}}  {r[2]:{w[2]}}  {r[3]:{w[3]}}  {r[4]}")
    if explained_used:
        print("\nexplained differences:")
        for name, reason, _ in EXPLAINED:
            if name in explained_used:
                print(f"  {name}: {reason}")
    if details:
        print("\ndifferences:")
        for d in details:
            print("  " + d)
    same = sum(1 for r in rows if r[4] == "same" or r[4].startswith("explained") or "as the template says" in r[4])
    print(f"\ncompare: {len(rows)} resources, {same} compared equal, {failures} unexplained difference(s)")
    return failures


# ----------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--template", required=True)
    ap.add_argument("--state-dir")
    ap.add_argument("--stack-name", default="pec-cfn", help="the CloudFormation stack (default pec-cfn)")
    ap.add_argument("--bootstrap-stack", default="pec-boot", help="bootstrap.py's stack to compare with")
    ap.add_argument("--no-bootstrap", action="store_true", help="compare with an existing <state-dir>/<bootstrap-stack>.resources.json")
    ap.add_argument("--parameter", action="append", default=[], help="Key=Value (both paths)")
    ap.add_argument("--keep-type", action="append", default=[], help="do not remove this type (to see LocalStack fail on it)")
    ap.add_argument("--preprocess-only", action="store_true", help="print the removals; no AWS calls")
    ap.add_argument("--write-template", help="write the pre-processed template here (JSON)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--compare-only", action="store_true", help="compare an already deployed --stack-name (debugging)")
    args = ap.parse_args(argv)
    started = time.monotonic()

    overrides = dict(kv.split("=", 1) for kv in args.parameter)
    original, transformed = bs.load_template(args.template, overrides)
    declared = original.get("Parameters", {})
    parameters = {**{k: v for k, v in bs.LOCAL_PROFILE.items() if k in declared}, **overrides}
    unknown = set(parameters) - set(declared)
    if unknown:
        raise CheckError(f"unknown parameters: {sorted(unknown)}")
    print(f"pre-process: SAM transform done here (samtranslator), {len(transformed['Resources'])} resources")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "eu-south-1"
    conditions = bs.evaluate_conditions(
        transformed, bs.Resolver(args.stack_name, region, bs.parameters_from(original, parameters)))
    print("pre-process: conditions " + ", ".join(f"{k}={str(v).lower()}" for k, v in sorted(conditions.items())))
    problems = check_parameters(transformed, bs.parameters_from(original, parameters))
    if problems:
        raise CheckError("CloudFormation would refuse these parameters (LocalStack does not check them):\n  "
                         + "\n  ".join(problems))
    print(f"pre-process: {len(transformed.get('Parameters', {}))} parameters within their constraints, "
          f"{len(transformed.get('Rules') or {})} rule(s) hold (checked here: LocalStack checks neither)")
    processed, removed = preprocess(transformed, set(args.keep_type), conditions, print)
    print(f"pre-process: {len(removed)} removed, {len(processed['Resources'])} left for CloudFormation")
    # LocalStack 4.8.1 deploys a DependsOn cycle without complaint (AWS refuses the template):
    # bootstrap.py's ordering finds cycles through Ref, GetAtt, Sub and DependsOn.
    bs.creation_order(processed["Resources"])
    print("pre-process: no dependency cycle")
    if args.write_template:
        Path(args.write_template).write_text(json.dumps(processed, indent=1), encoding="utf-8")
    if args.preprocess_only:
        return 0

    if not args.state_dir:
        raise CheckError("--state-dir is required unless --preprocess-only")
    if not os.environ.get("AWS_ENDPOINT_URL") or not os.environ.get("AWS_ENDPOINT_URL_DYNAMODB"):
        print("deploy_check: AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_DYNAMODB must point at the emulators "
              "(eval \"$(infra/local/stack.sh env)\"); refusing to touch a real account", file=sys.stderr)
        return 2
    if args.stack_name == args.bootstrap_stack:
        raise CheckError("--stack-name and --bootstrap-stack must differ: both create named resources on the same emulators")
    clients = aws_clients(region)

    boot_file = Path(args.state_dir) / f"{args.bootstrap_stack}.resources.json"
    if not args.no_bootstrap:
        cmd = [sys.executable, str(HERE / "bootstrap.py"), "--template", args.template, "--state-dir", args.state_dir,
               "--stack-name", args.bootstrap_stack] + [f"--parameter={p}" for p in args.parameter]
        t0 = time.monotonic()
        subprocess.run(cmd, check=True)
        print(f"bootstrap: {time.monotonic() - t0:.1f} s")
    boot = json.loads(boot_file.read_text(encoding="utf-8"))
    boot["_transformed"] = transformed
    if {k: str(v) for k, v in boot["parameters"].items()} != {k: str(v) for k, v in bs.parameters_from(original, parameters).items()}:
        raise CheckError(f"{boot_file} was made with other parameters than this deployment")

    t0 = time.monotonic()
    if args.compare_only:
        deployed = stack_resources(clients["cloudformation"], args.stack_name)
    else:
        deployed = deploy(clients["cloudformation"], clients["s3"], args.stack_name, region, processed, parameters,
                          args.timeout)
        print(f"deploy: stack {args.stack_name} CREATE_COMPLETE with {len(deployed)} resources in {time.monotonic() - t0:.1f} s")
    failures = compare(transformed, processed, removed, deployed, boot, region, args.stack_name, clients)
    print(f"deploy_check: {'ok' if not failures else 'FAILED'} in {time.monotonic() - started:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (CheckError, bs.BootstrapError) as e:
        print(f"deploy_check: error: {e}", file=sys.stderr)
        sys.exit(1)
