#!/usr/bin/env python3
"""IAM, tested offline: every AWS call each function made against its role in template.yaml.

The functions run locally (pec-runner) with PEC_AWS_CALL_LOG set record one JSON line per AWS
call: function, stack, service, operation, HTTP status and the resource parts
(shared/pec-aws/src/call_log.rs). "Function" is the template logical id of the principal: a
Lambda function (AWS::Serverless::Function, whose role is its Role), or a service that is not a
Lambda, the edge service (AWS::ECS::Service EdgeService, whose role is its task definition's
TaskRoleArn, EdgeTaskRole): the runner hosts the edge locally and records its calls under that
name. The edge's resources are under the condition HasEdge, false locally; its role is rendered
all the same, since the role is what the edge's calls are checked against. This script

1. renders each principal's role (its inline policies in template.yaml) for each stack in the
   log, resolving !Sub / !GetAtt / !Ref to the physical names the local stack has
   (<state-dir>/<stack>.resources.json, written by bootstrap.py);
2. turns every recorded call into the IAM requests AWS authorises it as (REQUESTS below: e.g.
   HeadObject is s3:GetObject on the object, and a 404 also needs s3:ListBucket on the bucket;
   a DynamoDB transaction is one PutItem/UpdateItem/DeleteItem/ConditionCheckItem per item), and
   adds the requests Lambda's SQS event source mapping makes with the function's role
   (sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes on each queue of its SQS
   events: locally the runner polls instead, with clients of its own);
3. evaluates each request against the role with a policy evaluator (moto's, see Evaluator) and
   fails listing every denied request;
4. fails listing every permission (Allow statement x action x resource, and each value a
   condition lists, e.g. each dynamodb:LeadingKeys prefix) that no request used, except those in
   UNEXERCISED, each with the reason it cannot be exercised locally.

    iam_check.py --template template.yaml --run CALLS.jsonl STATE_DIR [--run ...]

(infra/test.sh records the integration tests and the demo, each with a copy of the stacks'
resources files taken right after it: a stack restarted in between has new KMS key ids.)

Exit 0 when every call is allowed and every permission is used; 1 otherwise (2: bad input).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bootstrap  # noqa: E402  (same folder: the template loader and the intrinsic resolver)


class CheckError(Exception):
    """The input cannot be checked (unknown resource, operation or condition operator)."""


# Permissions a role needs in AWS that no local run exercises, as (function, Sid, action,
# resource as reported), each with the reason. Keep it short: anything else unused is removed
# from the template, and each entry here is a call the check cannot see denied.
UNEXERCISED: dict[tuple[str, str, str, str], str] = {
    ("ApiFunction", "MassSendingObjects", "s3:PutObject",
     "arn:aws:s3:::${AWS::StackName}-raw-${AWS::AccountId}-${AWS::Region}/bulk/*"):
        "POST /v1/bulk-jobs stores a job's objects; the demo makes its job with `pec bulk send` "
        "(the operator's command, not a function) and follows it over the API (shared/pec-api/src/"
        "tests.rs bulk_jobs_made_followed_and_steered_over_http)",
    ("ApiFunction", "HandOutChunks", "sqs:SendMessage",
     "arn:aws:sqs:${AWS::Region}:${AWS::AccountId}:${AWS::StackName}-bulk"):
        "POST /v1/bulk-jobs and a resume with rows left hand out chunks; the demo's resume finds "
        "every row submitted (shared/pec-api/src/tests.rs bulk_jobs_made_followed_and_steered_over_http)",
    ("BulkFunction", "ChunksWaitForTheirTurn", "sqs:SendMessage",
     "arn:aws:sqs:${AWS::Region}:${AWS::AccountId}:${AWS::StackName}-bulk"):
        "a chunk taken before its turn (the job's pace) goes back on the bulk queue delayed; the "
        "demo's job is one chunk, due at once (shared/pec-pipeline/tests/bulk.rs "
        "a_locked_sender_pauses_the_job_and_resume_finishes_it)",
    ("IngressFunction", "RecordSesEnvelopes", "s3:PutObject",
     "arn:aws:s3:::${AWS::StackName}-raw-${AWS::AccountId}-${AWS::Region}/inbound/*.json"):
        "SES receiving invokes ingress with the SMTP envelope (Lambda action), which it records as "
        "inbound/<id>.json; receipt rules never run locally (pec-exchange writes that object)",
    ("IngressFunction", "SeeWhetherObjectsExist", "s3:ListBucket",
     "arn:aws:s3:::${AWS::StackName}-raw-${AWS::AccountId}-${AWS::Region}"):
        "SES receiving stores inbound/<message id> without .eml, so in AWS the receiving point's "
        "first HeadObject (inbound/<id>.eml) is a 404; locally pec-exchange always writes the .eml",
    ("IngressFunction", "SeeWhetherObjectsExist", "s3:ListBucket",
     "arn:aws:s3:::${AWS::StackName}-evidence-${AWS::AccountId}-${AWS::Region}"):
        "the defect-3 path below heads non-accettazione.eml and needs a 404 when it is missing; "
        "otherwise only a provider index or trust anchors not uploaded yet read as 404, which a "
        "run sees or not depending on the order of the tests (exchange.rs uploads them)",
    ("IngressFunction", "HeadRecordedNonAcceptance", "s3:GetObject",
     "arn:aws:s3:::${AWS::StackName}-evidence-${AWS::AccountId}-${AWS::Region}/unsigned/msg/*/non-accettazione.eml"):
        "only a duplicate submission event after a recorded refusal checks the notice (issue 11 "
        "defect 3); its regression tests run over the memory store, not on the emulators",
    ("DeliverFunction", "RetryDeferredRelaysLater", "sqs:SendMessage",
     "arn:aws:sqs:${AWS::Region}:${AWS::AccountId}:${AWS::StackName}-deliver"):
        "only a relay the receiving side defers (4xx, or every MX unreachable) puts the object "
        "back on the deliver queue; no run on the emulators meets one (pec-pipeline tests/relay.rs "
        "a_deferred_relay_comes_back_on_the_deliver_queue_until_24_hours, over the memory fakes)",
    ("EdgeService", "RecordRefusals", "dynamodb:PutItem",
     "arn:aws:dynamodb:ddblocal:${AWS::AccountId}:table/${AWS::StackName}-state"):
        "only an MX that refuses a certified recipient for good (5xx, no such domain) makes the "
        "relay worker record a not-delivered outcome; the two local providers' MXs take every "
        "provider's mail (pec-pipeline tests/relay.rs "
        "with_the_smtp_relay_deliver_hands_off_and_the_edge_worker_sends, over the memory fakes)",
    ("EdgeService", "RecordRefusals", "dynamodb:UpdateItem",
     "arn:aws:dynamodb:ddblocal:${AWS::AccountId}:table/${AWS::StackName}-state"):
        "as EdgeService RecordRefusals PutItem: the refused recipient's relay record marked failed",
    ("EdgeService", "HandRefusalsToReceipts", "sqs:SendMessage",
     "arn:aws:sqs:${AWS::Region}:${AWS::AccountId}:${AWS::StackName}-receipts"):
        "as EdgeService RecordRefusals PutItem: the refusal's receipts request",
    ("EdgeService", "RetryDeferredRelaysLater", "sqs:SendMessage",
     "arn:aws:sqs:${AWS::Region}:${AWS::AccountId}:${AWS::StackName}-relay"):
        "only an MX that defers (4xx, or every MX unreachable) puts a request back on the relay "
        "queue; no run on the emulators meets one (pec-pipeline tests/relay.rs, over the memory "
        "fakes)",
    ("EdgeService", "ConsumeTheRelayQueue", "sqs:ChangeMessageVisibility",
     "arn:aws:sqs:${AWS::Region}:${AWS::AccountId}:${AWS::StackName}-relay"):
        "the relay worker makes a failed message visible again (settle); no relay fails on the "
        "emulators (pec-pipeline tests/relay.rs the_relay_worker_refuses_requests_it_cannot_trust)",
    ("TimersFunction", "ReadSubmissions", "s3:GetObject",
     "arn:aws:s3:::${AWS::StackName}-raw-${AWS::AccountId}-${AWS::Region}/submitted/*"):
        "the 12 h / 24 h notices need a certified relay left without receipts; no run on the "
        "emulators leaves one (the timers are tested with an advanced clock over the memory fakes)",
    ("TimersFunction", "RelayedRecipientsAndMessages", "dynamodb:GetItem",
     "arn:aws:dynamodb:ddblocal:${AWS::AccountId}:table/${AWS::StackName}-state"):
        "as TimersFunction ReadSubmissions: no due timer in any run on the emulators",
    ("TimersFunction", "RelayedRecipientsAndMessages", "dynamodb:UpdateItem",
     "arn:aws:dynamodb:ddblocal:${AWS::AccountId}:table/${AWS::StackName}-state"):
        "as TimersFunction ReadSubmissions: no due timer in any run on the emulators",
    ("TimersFunction", "WriteNoticesForTheSigner", "s3:PutObject",
     "arn:aws:s3:::${AWS::StackName}-evidence-${AWS::AccountId}-${AWS::Region}/unsigned/msg/*"):
        "as TimersFunction ReadSubmissions: no due timer in any run on the emulators",
    ("ApiFunction", "ReadEvidence", "s3:GetObject",
     "arn:aws:s3:::${AWS::StackName}-evidence-${AWS::AccountId}-${AWS::Region}/received/msg/*"):
        "the API's check on the emulators follows a message to a mailbox of ours; receipts of "
        "other providers are listed and read by the same code, tested over the memory store "
        "(pec-api evidence_of_other_providers_and_viruses)",
    ("ApiFunction", "ReadEvidence", "s3:GetObject",
     "arn:aws:s3:::${AWS::StackName}-evidence-${AWS::AccountId}-${AWS::Region}/signed/scan/*"):
        "as ApiFunction ReadEvidence received/msg/*: virus notices are read through the API only "
        "in pec-api's tests over the memory store",
}
# Entries of UNEXERCISED that some runs exercise and others do not (not stale when used).
ORDER_DEPENDENT = {
    ("IngressFunction", "SeeWhetherObjectsExist", "s3:ListBucket",
     "arn:aws:s3:::${AWS::StackName}-evidence-${AWS::AccountId}-${AWS::Region}"),
}


@dataclass(frozen=True)
class Request:
    """One IAM authorisation AWS makes for a call."""
    function: str
    stack: str
    action: str
    resource: str
    context: tuple[tuple[str, tuple[str, ...]], ...] = ()
    why: str = field(default="", compare=False, hash=False)  # the call it comes from (report)

    def context_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.context}


# ----------------------------------------------------------------------------- the evaluator


def _glob(pattern: str, value: str, case_sensitive: bool = True) -> bool:
    """IAM wildcard match: * any run of characters, ? one character, nothing else special."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case_sensitive else re.IGNORECASE) is not None


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def conditions_hold(condition: dict | None, context: dict[str, list[str]]) -> bool:
    """A statement's Condition block with AWS's semantics for the operators our templates use:
    every operator and every key must hold; a key missing from the request fails a plain
    operator (unless ...IfExists), holds for ForAllValues: and fails ForAnyValue:. An operator
    not handled here is an error (never silently true, which is what moto's evaluator does with
    the operators it does not implement and with missing keys)."""
    if not condition:
        return True
    lowered = {k.lower(): v for k, v in context.items()}
    for operator, tests in condition.items():
        qualifier, _, op = operator.rpartition(":")
        if_exists = op.endswith("IfExists")
        op = op.removesuffix("IfExists")
        if op in ("StringEquals", "StringNotEquals"):
            match = lambda p, v: p == v  # noqa: E731
        elif op in ("StringLike", "StringNotLike"):
            match = _glob
        else:
            raise CheckError(f"condition operator {operator} is not handled by iam_check.py")
        negated = "Not" in op
        for key, patterns in tests.items():
            values = lowered.get(key.lower())
            patterns = _as_list(patterns)
            if values is None:
                if qualifier == "ForAllValues" or if_exists:
                    continue
                return False
            hit = [any(match(p, v) for p in patterns) != negated for v in values]
            if qualifier == "ForAllValues":
                ok = all(hit)
            elif qualifier in ("ForAnyValue", ""):
                ok = any(hit)
            else:
                raise CheckError(f"condition qualifier {qualifier} is not handled by iam_check.py")
            if not ok:
                return False
    return True


class Evaluator:
    """Evaluates requests against identity policies with moto's IAM policy evaluator
    (moto.iam.access_control: statement matching on Action/NotAction and Resource/NotResource,
    explicit Deny over Allow, implicit deny), which the venv already has (LocalStack's moto-ext).
    Two of moto's shortcuts are closed here: its wildcard match is a regular expression (so `.`
    and `?` do not mean what IAM means; replaced by _glob) and its conditions ignore operators
    it does not implement and keys missing from the request (replaced by conditions_hold, strict).
    Actions compare case-insensitively, as in IAM."""

    def __init__(self) -> None:
        from moto.iam.access_control import IAMPolicyStatement, PermissionResult

        class Statement(IAMPolicyStatement):
            def __init__(self, statement: dict, context: dict[str, list[str]]):
                super().__init__({k: v for k, v in statement.items() if k != "Condition"})
                self.condition = statement.get("Condition")
                self.context = context

            def _check_element_matches(self, element: str, value: str) -> bool:
                sensitive = element not in ("Action", "NotAction")
                return any(_glob(p, value, sensitive) for p in _as_list(self._statement[element]))

            def is_action_permitted(self, action: str, resource: str = "*", *_a, **_k):
                result = super().is_action_permitted(action, resource)
                if result != PermissionResult.NEUTRAL and not conditions_hold(self.condition, self.context):
                    return PermissionResult.NEUTRAL
                return result

        self._statement = Statement
        self._result = PermissionResult

    def allowed(self, statements: Iterable[dict], request: Request) -> bool:
        context = request.context_dict()
        permitted = False
        for st in statements:
            result = self._statement(st, context).is_action_permitted(request.action, request.resource)
            if result == self._result.DENIED:
                return False
            permitted |= result == self._result.PERMITTED
        return permitted


# ----------------------------------------------------------------------------- the template


@dataclass
class Stack:
    name: str
    region: str
    resources: dict[str, dict]  # logical id -> attributes (bootstrap's "physical")
    roles: dict[str, list[dict]] = field(default_factory=dict)  # principal -> its role's statements
    queues: dict[str, list[str]] = field(default_factory=dict)  # function -> SQS event queue ARNs
    # The stack's ProviderDomain: two providers' stacks differ in it too (e.g. a key condition on
    # MBX#security@<domain>), and a permission is the same permission in both.
    domain: str = ""

    def generic(self, arn: str) -> str:
        """An ARN (or a condition value) of this stack as the template writes it (stack, account,
        region and provider domain as names)."""
        out = (arn.replace(self.name, "${AWS::StackName}").replace(ACCOUNT, "${AWS::AccountId}")
               .replace(self.region, "${AWS::Region}"))
        return out.replace(self.domain, "${ProviderDomain}") if self.domain else out

    def find(self, attr: str, value: str) -> dict:
        for attrs in self.resources.values():
            if attrs.get(attr) == value:
                return attrs
        raise CheckError(f"stack {self.name}: no resource has {attr} {value!r} (not from template.yaml?)")


def statements_of(policy_document: dict) -> list[dict]:
    return _as_list(policy_document.get("Statement", []))


def load_stack(template: str, state_dir: str, name: str) -> Stack:
    path = os.path.join(state_dir, f"{name}.resources.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise CheckError(f"{path} is missing: run infra/local/stack.sh bootstrap --stack-name {name}") from None
    if "parameters" not in data:
        raise CheckError(f"{path} has no parameters (written by an older bootstrap.py): bootstrap again")
    original, _ = bootstrap.load_template(template, {k: str(v) for k, v in data["parameters"].items()})
    resolver = bootstrap.Resolver(name, data["region"], data["parameters"])
    resolver.physical = data["resources"]
    return stack_from_template(original, resolver, name, data["region"])


def _role_of(resources: dict, logical: str, value: Any, what: str) -> str:
    """The logical id of the AWS::IAM::Role that `value` (a !GetAtt <role>.Arn) names."""
    att = value.get("Fn::GetAtt") if isinstance(value, dict) else None
    role = att.split(".")[0] if isinstance(att, str) else (att or [None])[0]
    if role not in resources or resources[role].get("Type") != "AWS::IAM::Role":
        raise CheckError(f"{logical}: its {what} must be !GetAtt <an AWS::IAM::Role of the template>.Arn")
    return role


def principals(resources: dict) -> dict[str, str]:
    """Principal (the name its calls are recorded under) -> the logical id of its role: every
    Lambda function (its Role), and every ECS service whose task definition has a TaskRoleArn,
    whatever their Condition."""
    out = {}
    for logical, res in resources.items():
        props = res.get("Properties", {}) or {}
        if res.get("Type") == "AWS::Serverless::Function":
            out[logical] = _role_of(resources, logical, props.get("Role"), "Role")
        elif res.get("Type") == "AWS::ECS::Service":
            ref = props.get("TaskDefinition")
            task = ref.get("Ref") if isinstance(ref, dict) else None
            if task not in resources or resources[task].get("Type") != "AWS::ECS::TaskDefinition":
                raise CheckError(f"{logical}: its TaskDefinition must be !Ref <an AWS::ECS::TaskDefinition of the template>")
            task_role = resources[task]["Properties"].get("TaskRoleArn")
            if task_role is None:
                # No task role: its containers can call no AWS API (the spam engine), so there
                # is nothing to check.
                continue
            out[logical] = _role_of(resources, task, task_role, "TaskRoleArn")
    return out


def stack_from_template(original: dict, resolver: bootstrap.Resolver, name: str, region: str) -> Stack:
    stack = Stack(name, region, resolver.physical)
    stack.domain = str(resolver.params.get("ProviderDomain", "")).lower()
    resources = original.get("Resources", {})
    for logical, role in principals(resources).items():
        props = resources[logical]["Properties"]
        statements = []
        for policy in resources[role]["Properties"].get("Policies", []):
            for st in statements_of(resolver.resolve(policy["PolicyDocument"])):
                statements.append({**st, "_policy": policy["PolicyName"]})
        stack.roles[logical] = statements
        # Lambda's SQS event source mappings (an ECS service has none).
        stack.queues[logical] = [resolver.resolve(ev["Properties"]["Queue"])
                                 for ev in props.get("Events", {}).values() if ev.get("Type") == "SQS"]
    return stack


# ----------------------------------------------------------------------------- calls -> requests

ACCOUNT = bootstrap.ACCOUNT

# S3 operations and the action each is authorised as (on the object unless noted).
S3_OBJECT = {"GetObject": "s3:GetObject", "HeadObject": "s3:GetObject", "PutObject": "s3:PutObject",
             "DeleteObject": "s3:DeleteObject", "PutObjectRetention": "s3:PutObjectRetention"}
S3_BUCKET = {"ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket"}
DYNAMO_ITEM = {"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query"}
TRANSACT_KIND = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                 "ConditionCheck": "ConditionCheckItem"}
SQS_OPS = {"SendMessage", "ReceiveMessage", "DeleteMessage", "ChangeMessageVisibility", "GetQueueAttributes"}
# SES (v1) identity management: a tenant's own domain added, verified, removed (the api function).
SES_IDENTITY_OPS = {"VerifyDomainIdentity", "VerifyDomainDkim", "GetIdentityVerificationAttributes",
                    "GetIdentityDkimAttributes", "DeleteIdentity"}
KMS_OPS = {"Sign", "GetPublicKey", "Verify", "DescribeKey"}


def _ctx(**values: list[str] | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(sorted((k.replace("__", ":"), tuple(v)) for k, v in values.items() if v is not None))


def requests_for(call: dict, stack: Stack, stack_key: str | None = None) -> list[Request]:
    fn, service, op = call["function"], call["service"], call["operation"]
    why = f"{service} {op} " + " ".join(
        str(call[k]) for k in ("bucket", "key", "prefix", "TableName", "IndexName", "pk", "QueueUrl", "KeyId", "source")
        if call.get(k))
    stack_key = stack_key or stack.name
    req = lambda action, resource, context=(): Request(fn, stack_key, action, resource, context, why.strip())  # noqa: E731
    if service == "S3":
        bucket = stack.find("BucketName", call["bucket"])["Arn"]
        if op in S3_OBJECT:
            out = [req(S3_OBJECT[op], f"{bucket}/{call['key']}")]
            if op in ("GetObject", "HeadObject") and call.get("status") == 404:
                # A missing object is a 404 only for a caller that may list the bucket, else 403.
                out.append(req("s3:ListBucket", bucket))
            if op == "PutObject" and call.get("object_lock_retention"):
                out.append(req("s3:PutObjectRetention", f"{bucket}/{call['key']}"))
            return out
        if op in S3_BUCKET:
            return [req(S3_BUCKET[op], bucket, _ctx(s3__prefix=[call.get("prefix", "")]))]
    if service == "DynamoDB":
        if op == "TransactWriteItems":
            return [req(f"dynamodb:{TRANSACT_KIND[item['kind']]}", stack.find("TableName", item["TableName"])["Arn"],
                        _ctx(dynamodb__LeadingKeys=[item["pk"]] if item.get("pk") else None))
                    for item in call.get("TransactItems", [])]
        if op in DYNAMO_ITEM:
            arn = stack.find("TableName", call["TableName"])["Arn"]
            if call.get("IndexName"):
                arn += f"/index/{call['IndexName']}"
            pk = call.get("pk") if op != "Query" else query_partition_key(call)
            return [req(f"dynamodb:{op}", arn, _ctx(dynamodb__LeadingKeys=[pk] if pk else None))]
    if service == "SQS" and op in SQS_OPS:
        return [req(f"sqs:{op}", stack.find("QueueUrl", call["QueueUrl"])["Arn"])]
    if service == "KMS" and op in KMS_OPS:
        key = call["KeyId"]
        attrs = next((a for a in stack.resources.values() if key in (a.get("KeyId"), a.get("Arn"))), None)
        if attrs is None:
            raise CheckError(f"stack {stack.name}: KMS key {key!r} is not a key of the template")
        return [req(f"kms:{op}", attrs["Arn"])]
    if service == "EventBridge" and op == "PutEvents":
        buses = call.get("EventBusNames") or ["default"]
        return [req("events:PutEvents", bus if bus.startswith("arn:") else stack.find("Name", bus)["Arn"])
                for bus in buses]
    if service == "SES" and op in SES_IDENTITY_OPS:
        return [req(f"ses:{op}", f"arn:aws:ses:{stack.region}:{ACCOUNT}:identity/{call.get('identity') or '*'}")]
    if service == "SES" and op in ("SendRawEmail", "SendEmail"):
        source = call.get("source") or ""
        identity = source.rpartition("@")[2]
        return [req(f"ses:{op}", f"arn:aws:ses:{stack.region}:{ACCOUNT}:identity/{identity}",
                    _ctx(ses__FromAddress=[source] if source else None))]
    if service == "SNS" and op == "Publish":
        # SMS to a phone number: no resource ARN, authorised on "*" (the only publishes we make).
        return [req("sns:Publish", "*")]
    raise CheckError(f"{fn}: no IAM mapping for {service} {op}: add it to iam_check.py (REQUESTS)")


def query_partition_key(call: dict) -> str | None:
    """The partition key value a Query names: `<name> = :v` in its key condition, where <name> is
    `pk`/`gsi1pk`-like (the first equality of the expression)."""
    m = re.match(r"\s*(#?\w+)\s*=\s*(:\w+)", call.get("KeyConditionExpression", ""))
    if not m:
        return None
    value = (call.get("ExpressionAttributeValues") or {}).get(m.group(2), {})
    return value.get("S")


def event_source_requests(stack: Stack, key: str | None = None) -> list[Request]:
    """What Lambda's SQS event source mapping does with each function's role."""
    return [Request(fn, key or stack.name, action, arn, (), f"Lambda event source mapping of {fn}")
            for fn, arns in stack.queues.items() for arn in arns
            for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")]


# ----------------------------------------------------------------------------- the check


@dataclass
class Report:
    denied: list[Request] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    excused: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    checked: int = 0
    functions: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.denied and not self.unused and not self.stale


def check(stacks: dict[str, Stack], calls: list[dict], evaluator: Evaluator | None = None,
          unexercised: dict[tuple[str, str, str, str], str] | None = None) -> Report:
    evaluator = evaluator or Evaluator()
    unexercised = UNEXERCISED if unexercised is None else unexercised
    report = Report()
    requests: list[Request] = []
    for key, stack in stacks.items():
        requests += event_source_requests(stack, key)
    for call in calls:
        stack = stacks.get(call.get("stack") or "")
        if stack is None:
            raise CheckError(f"call recorded for unknown stack {call.get('stack')!r}: {call}")
        if call["function"] not in stack.roles:
            raise CheckError(f"call recorded for {call['function']}, which is not a function (or ECS service) of the template")
        report.functions.add(call["function"])
        try:
            requests += requests_for(call, stack, call["stack"])
        except KeyError as e:
            raise CheckError(f"the call lacks {e} (its request never reached the wire?): {call}") from None
    unique = sorted(set(requests), key=lambda r: (r.stack, r.function, r.action, r.resource, r.context))
    report.checked = len(unique)
    for r in unique:
        if not evaluator.allowed(stacks[r.stack].roles[r.function], r):
            report.denied.append(r)
    # Every permission must serve a request: each Allow statement's action x resource, alone.
    # The roles come from one template, so a permission used in any stack is used.
    used: dict[tuple[str, str, str, str], bool] = {}
    for key, stack in stacks.items():
        for fn, statements in sorted(stack.roles.items()):
            mine = [r for r in unique if r.function == fn and r.stack == key]
            for st in statements:
                if st.get("Effect") != "Allow" or "Action" not in st or "Resource" not in st:
                    continue
                for action in _as_list(st["Action"]):
                    for resource in _as_list(st["Resource"]):
                        single = {**st, "Action": action, "Resource": resource}
                        perm = (fn, st.get("Sid", "?"), action, stack.generic(resource))
                        used[perm] = used.get(perm, False) or any(evaluator.allowed([single], r) for r in mine)
                        # Each value a condition lists must serve a request too (e.g. each
                        # dynamodb:LeadingKeys prefix), tried alone in place of the list.
                        for operator, tests in (st.get("Condition") or {}).items():
                            for ckey, values in tests.items():
                                if not isinstance(values, list) or len(values) < 2:
                                    continue
                                for value in values:
                                    narrowed = {**st["Condition"], operator: {**tests, ckey: [value]}}
                                    one = {**single, "Condition": narrowed}
                                    vperm = (perm[0], perm[1], perm[2],
                                             f"{perm[3]} when {ckey} {stack.generic(str(value))}")
                                    used[vperm] = used.get(vperm, False) or any(
                                        evaluator.allowed([one], r) for r in mine)
    # An allow-list entry for a permission that is used, or that the template no longer has, is
    # stale: it would hide the next permission of that name.
    report.stale = sorted(f"{fn} {sid}: {action} on {pattern}" for (fn, sid, action, pattern) in unexercised
                          if (fn, sid, action, pattern) not in used
                          or (used[(fn, sid, action, pattern)] and (fn, sid, action, pattern) not in ORDER_DEPENDENT))
    for (fn, sid, action, pattern), was_used in sorted(used.items()):
        if was_used:
            continue
        line = f"{fn} {sid}: {action} on {pattern}"
        reason = unexercised.get((fn, sid, action, pattern))
        if reason:
            report.excused.append(f"{line} (not exercised locally: {reason})")
        else:
            report.unused.append(line)
    return report


def read_calls(paths: list[str]) -> list[dict]:
    calls = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        calls.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise CheckError(f"{path}:{n}: not JSON: {e}") from None
    return calls


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--template", required=True)
    ap.add_argument("--run", nargs=2, action="append", required=True, metavar=("LOG", "STATE_DIR"),
                    help="a call log (PEC_AWS_CALL_LOG) and the state dir whose <stack>.resources.json "
                         "files describe the stacks it ran against (a copy taken right after the run)")
    ap.add_argument("--require-function", action="append", default=None,
                    help="fail unless the logs have calls of this function (default: every template function)")
    args = ap.parse_args(argv)
    try:
        stacks: dict[str, Stack] = {}
        calls: list[dict] = []
        for i, (log, state_dir) in enumerate(args.run):
            run_calls = read_calls([log])
            for name in sorted({c.get("stack") or "" for c in run_calls}):
                stacks[f"{name}@{i}"] = load_stack(args.template, state_dir, name)
            calls += [{**c, "stack": f"{c.get('stack')}@{i}"} for c in run_calls]
        if not calls:
            raise CheckError("no call recorded in " + ", ".join(log for log, _ in args.run))
        report = check(stacks, calls)
    except (CheckError, bootstrap.BootstrapError, OSError) as e:
        print(f"iam_check: error: {e}", file=sys.stderr)
        return 2
    every = set().union(*(s.roles for s in stacks.values()))
    required = set(args.require_function) if args.require_function else every
    silent = sorted(required - report.functions)
    print(f"iam_check: {len(calls)} calls of {len(report.functions)} functions in {len(args.run)} runs "
          f"(stacks {', '.join(sorted({s.name for s in stacks.values()}))}): {report.checked} distinct IAM requests")
    shown = set()
    for r in report.denied:
        key = (r.function, r.action, stacks[r.stack].generic(r.resource))
        if key in shown:
            continue  # one line per permission missing, with the first call that needed it
        shown.add(key)
        ctx = f" with {r.context_dict()}" if r.context else ""
        print(f"DENIED  {r.function}: {r.action} on {r.resource}{ctx}  <- {r.why}")
    for line in report.unused:
        print(f"UNUSED  {line}")
    for line in report.stale:
        print(f"STALE  UNEXERCISED entry for a permission that is used or gone: {line}")
    for line in report.excused:
        print(f"allowed, unused: {line}")
    for fn in silent:
        print(f"NO CALLS  {fn}: the runs recorded nothing for it, so its role is not checked")
    if report.ok and not silent:
        print("iam_check: every call is allowed by its function's role, every permission is used")
        return 0
    print(f"iam_check: {len(shown)} permissions missing, {len(report.unused)} unused, "
          f"{len(report.stale)} stale allow-list entries, {len(silent)} functions without calls",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
