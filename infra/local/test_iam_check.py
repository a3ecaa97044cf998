"""Tests of the offline IAM check (iam_check.py): a call the role does not allow fails, and so
does a permission no call uses; the evaluator keeps IAM's semantics where moto's shortcuts don't.

Run: <venv>/bin/python -m unittest discover -s infra/local -p 'test_*.py'  (infra/test.sh does).
"""

import copy
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import bootstrap  # noqa: E402
import iam_check  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEMPLATE = os.path.join(REPO, "template.yaml")
STACK = "pec-test"
REGION = "eu-south-1"


class OfflineCreator:
    """bootstrap.Creator's attributes for each resource, without emulators: the names the
    template gives, ARNs built as AWS (and the emulators) build them."""

    def __init__(self) -> None:
        self.keys = 0

    def queue(self, logical, p):
        name = p.get("QueueName") or f"{STACK}-{logical}"
        url = f"http://sqs.local/{bootstrap.ACCOUNT}/{name}"
        return {"Ref": url, "Arn": f"arn:aws:sqs:{REGION}:{bootstrap.ACCOUNT}:{name}", "QueueName": name, "QueueUrl": url}

    def bucket(self, logical, p):
        name = p.get("BucketName") or f"{STACK}-{logical}".lower()
        return {"Ref": name, "Arn": f"arn:aws:s3:::{name}", "BucketName": name}

    def table(self, logical, p):
        name = p.get("TableName") or f"{STACK}-{logical}"
        return {"Ref": name, "Arn": f"arn:aws:dynamodb:{REGION}:{bootstrap.ACCOUNT}:table/{name}", "TableName": name}

    def key(self, logical, p):
        self.keys += 1
        key_id = f"0000000{self.keys}-0000-0000-0000-000000000000"
        return {"Ref": key_id, "Arn": f"arn:aws:kms:{REGION}:{bootstrap.ACCOUNT}:key/{key_id}", "KeyId": key_id}

    def alias(self, logical, p):
        return {"Ref": p["AliasName"]}

    def event_bus(self, logical, p):
        return {"Ref": p["Name"], "Arn": f"arn:aws:events:{REGION}:{bootstrap.ACCOUNT}:event-bus/{p['Name']}", "Name": p["Name"]}

    def rule(self, logical, p):
        name = p.get("Name") or f"{STACK}-{logical}"
        bus = p.get("EventBusName", "default")
        path = name if bus == "default" else f"{bus}/{name}"
        return {"Ref": name, "Arn": f"arn:aws:events:{REGION}:{bootstrap.ACCOUNT}:rule/{path}"}

    def email_identity(self, logical, p):
        return {"Ref": p["EmailIdentity"]}

    def topic(self, logical, p):
        arn = f"arn:aws:sns:{REGION}:{bootstrap.ACCOUNT}:{STACK}-{logical}"
        return {"Ref": arn, "TopicArn": arn}


def offline_stack(original: dict, transformed: dict) -> iam_check.Stack:
    params = bootstrap.parameters_from(original, {})
    resolver = bootstrap.Resolver(STACK, REGION, params)
    creator = OfflineCreator()
    resources = transformed["Resources"]
    conditions = bootstrap.evaluate_conditions(transformed, resolver)
    for logical in bootstrap.to_create(transformed, set(bootstrap.Creator.HANDLERS), conditions):
        method = bootstrap.Creator.HANDLERS.get(resources[logical]["Type"])
        if method:
            props = resolver.resolve(resources[logical].get("Properties", {}))
            resolver.physical[logical] = getattr(creator, method)(logical, props)
    return iam_check.stack_from_template(original, resolver, STACK, REGION)


def role_statements(original: dict, role: str) -> list:
    return original["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]


class IamCheck(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.original, cls.transformed = bootstrap.load_template(TEMPLATE, {})
        cls.evaluator = iam_check.Evaluator()

    def stack(self, original=None) -> iam_check.Stack:
        return offline_stack(original or self.original, self.transformed)

    def sign_calls(self, stack: iam_check.Stack) -> list:
        """Every call the sign step makes: its set-up, the idempotency check, the facts it checks
        (message and inbound records, a virus verdict), the signature, the locked write."""
        evidence = stack.resources["EvidenceBucket"]["BucketName"]
        state = stack.resources["StateTable"]["TableName"]
        key_id = stack.resources["SigningKey"]["KeyId"]
        call = lambda **kw: {"function": "SignFunction", "stack": STACK, "status": 200, **kw}  # noqa: E731
        return [
            call(service="KMS", operation="GetPublicKey", KeyId=key_id),
            call(service="S3", operation="GetObject", bucket=evidence, key="config/provider-chain.pem"),
            call(service="S3", operation="GetObject", bucket=evidence, key="unsigned/msg/1/accettazione.eml"),
            call(service="S3", operation="HeadObject", bucket=evidence, key="signed/msg/1/accettazione.eml", status=404),
            call(service="S3", operation="HeadObject", bucket=evidence, key="signed/msg/1/accettazione.eml"),
            call(service="DynamoDB", operation="GetItem", TableName=state, pk="MSG#1"),
            call(service="DynamoDB", operation="GetItem", TableName=state, pk="IN#2"),
            call(service="S3", operation="GetObject", bucket=evidence, key="scan/verdict/submitted/3.eml.json"),
            call(service="KMS", operation="Sign", KeyId=key_id),
            call(service="S3", operation="PutObject", bucket=evidence, key="signed/msg/1/accettazione.eml",
                 object_lock_retention=True),
        ]

    def test_the_signer_cannot_read_mailboxes_or_write_facts(self):
        """The sign role reads message and inbound records only (LeadingKeys), and writes none."""
        stack = self.stack()
        state = stack.resources["StateTable"]["TableName"]
        arn = stack.resources["StateTable"]["Arn"]
        call = lambda **kw: {"function": "SignFunction", "stack": STACK, "status": 200, **kw}  # noqa: E731
        calls = [
            call(service="DynamoDB", operation="GetItem", TableName=state, pk="MBX#mario@pec.example.test"),
            call(service="DynamoDB", operation="PutItem", TableName=state, pk="MSG#1"),
        ]
        self.assertEqual(self.denied(stack, calls),
                         [("SignFunction", "dynamodb:GetItem", arn), ("SignFunction", "dynamodb:PutItem", arn)])

    def denied(self, stack, calls) -> list:
        return [(r.function, r.action, r.resource) for r in iam_check.check({STACK: stack}, calls, self.evaluator).denied]

    def test_the_sign_steps_calls_are_allowed_by_its_role(self):
        stack = self.stack()
        self.assertEqual(self.denied(stack, self.sign_calls(stack)), [])

    def test_sign_role_without_get_object_on_signed_fails_the_head_object(self):
        """The past defect: HeadObject on signed/<key> is authorised as s3:GetObject."""
        original = copy.deepcopy(self.original)
        statements = role_statements(original, "SignFunctionRole")
        statements[:] = [st for st in statements if st["Sid"] != "HeadSignedForIdempotency"]
        stack = self.stack(original)
        evidence = stack.resources["EvidenceBucket"]["Arn"]
        self.assertIn(("SignFunction", "s3:GetObject", f"{evidence}/signed/msg/1/accettazione.eml"),
                      self.denied(stack, self.sign_calls(stack)))

    def test_a_404_needs_list_bucket_and_a_prefix_condition_does_not_give_it(self):
        """HeadObject of a missing key is a 404 only with s3:ListBucket on the bucket; the
        request carries no s3:prefix, so a ListBucket conditioned on a prefix does not count."""
        original = copy.deepcopy(self.original)
        for st in role_statements(original, "SignFunctionRole"):
            if st["Action"] == "s3:ListBucket":
                st["Condition"] = {"StringLike": {"s3:prefix": "signed/*"}}
        stack = self.stack(original)
        evidence = stack.resources["EvidenceBucket"]["Arn"]
        self.assertEqual(self.denied(stack, self.sign_calls(stack)), [("SignFunction", "s3:ListBucket", evidence)])

    def test_a_permission_no_call_uses_fails(self):
        original = copy.deepcopy(self.original)
        role_statements(original, "SignFunctionRole").append(
            {"Sid": "Extra", "Effect": "Allow", "Action": "s3:DeleteObject",
             "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${EvidenceBucket}/signed/*"}})
        stack = self.stack(original)
        report = iam_check.check({STACK: stack}, self.sign_calls(stack), self.evaluator, unexercised={})
        unused = [line for line in report.unused if line.startswith("SignFunction ")]
        pattern = "arn:aws:s3:::${AWS::StackName}-evidence-${AWS::AccountId}-${AWS::Region}/signed/*"
        self.assertEqual(unused, [f"SignFunction Extra: s3:DeleteObject on {pattern}"])
        excused = iam_check.check({STACK: stack}, self.sign_calls(stack), self.evaluator,
                                  unexercised={("SignFunction", "Extra", "s3:DeleteObject", pattern): "a reason"})
        self.assertFalse(any(line.startswith("SignFunction ") for line in excused.unused))
        self.assertTrue(any("a reason" in line for line in excused.excused))
        self.assertEqual(excused.stale, [])
        # An allow-list entry for a permission the calls use (or the template lacks) is stale.
        stale = iam_check.check({STACK: stack}, self.sign_calls(stack), self.evaluator, unexercised={
            ("SignFunction", "WriteSigned", "s3:PutObject", pattern): "used after all",
            ("SignFunction", "Gone", "s3:GetObject", pattern): "not in the template"})
        self.assertEqual(len(stale.stale), 2)
        self.assertFalse(stale.ok)

    def test_the_event_source_mapping_needs_its_queue(self):
        original = copy.deepcopy(self.original)
        statements = role_statements(original, "SignFunctionRole")
        statements[:] = [st for st in statements if st["Sid"] != "ConsumeTheSignQueue"]
        stack = self.stack(original)
        denied = {action for fn, action, _ in self.denied(stack, self.sign_calls(stack)) if fn == "SignFunction"}
        self.assertEqual(denied, {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"})

    def test_transactions_are_authorised_item_by_item(self):
        stack = self.stack()
        state = stack.resources["StateTable"]["TableName"]
        log = stack.resources["ProviderLogTable"]["TableName"]
        calls = [{"function": "ReceiptsFunction", "stack": STACK, "service": "DynamoDB",
                  "operation": "TransactWriteItems", "status": 200,
                  "TransactItems": [{"kind": "Put", "TableName": state, "pk": "MSG#1"},
                                    {"kind": "Put", "TableName": log, "pk": "DAY#1"}]}]
        denied = self.denied(stack, calls)
        self.assertIn(("ReceiptsFunction", "dynamodb:PutItem", stack.resources["StateTable"]["Arn"]), denied)
        self.assertIn(("ReceiptsFunction", "dynamodb:PutItem", stack.resources["ProviderLogTable"]["Arn"]), denied)

    def test_leading_keys_limit_each_role_to_its_items(self):
        """Issue: roles could write any item of the state table (mailbox items included)."""
        stack = self.stack()
        state = stack.resources["StateTable"]["TableName"]
        put = lambda fn, pk: {"function": fn, "stack": STACK, "service": "DynamoDB", "operation": "PutItem",  # noqa: E731
                              "status": 200, "TableName": state, "pk": pk}
        arn = stack.resources["StateTable"]["Arn"]
        self.assertEqual(self.denied(stack, [put("IngressFunction", "MSG#1")]), [])
        self.assertIn(("IngressFunction", "dynamodb:PutItem", arn),
                      self.denied(stack, [put("IngressFunction", "MBX#mario@pec.example.test")]))
        self.assertIn(("DeliverFunction", "dynamodb:PutItem", arn),
                      self.denied(stack, [put("DeliverFunction", "TENANT#t")]))
        query = {"function": "TimersFunction", "stack": STACK, "service": "DynamoDB", "operation": "Query",
                 "status": 200, "TableName": state, "IndexName": "gsi1",
                 "KeyConditionExpression": "gsi1pk = :pk AND gsi1sk <= :before",
                 "ExpressionAttributeValues": {":pk": {"S": "TIMER"}, ":before": {"S": "2026"}}}
        self.assertEqual(iam_check.requests_for(query, stack)[0].context_dict(),
                         {"dynamodb:LeadingKeys": ["TIMER"]})

    def test_each_leading_key_prefix_must_be_used(self):
        stack = self.stack()
        state = stack.resources["StateTable"]["TableName"]
        calls = [{"function": "IngressFunction", "stack": STACK, "service": "DynamoDB", "operation": "PutItem",
                  "status": 200, "TableName": state, "pk": "MSG#1"}]
        unused = iam_check.check({STACK: stack}, calls, self.evaluator, unexercised={}).unused
        self.assertTrue(any(line.startswith("IngressFunction RecordMessagesAndInboundMail: dynamodb:PutItem")
                            and line.endswith("when dynamodb:LeadingKeys IN#*") for line in unused), unused)
        self.assertFalse(any(line.endswith("when dynamodb:LeadingKeys MSG#*") and "RecordMessages" in line
                             for line in unused))

    def edge_calls(self, stack: iam_check.Stack) -> list:
        """What the edge service does (recorded as EdgeService): a login, IMAP LIST/SELECT/FETCH,
        default folders, STORE, an APPEND or Sent filing (a transaction), EXPUNGE (a transaction
        with deletions), the submission's two objects; the MX: the provider index, a tenant's
        domain, an arrival's two objects; the relay worker."""
        state = stack.resources["StateTable"]["TableName"]
        mailbox = stack.resources["MailboxBucket"]["BucketName"]
        raw = stack.resources["RawMailBucket"]["BucketName"]
        evidence = stack.resources["EvidenceBucket"]["BucketName"]
        relay = stack.resources["RelayQueue"]["QueueUrl"]
        pk = "MBX#mario@pec.example.test"
        call = lambda **kw: {"function": "EdgeService", "stack": STACK, "status": 200, **kw}  # noqa: E731
        query = {"KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
                 "ExpressionAttributeValues": {":pk": {"S": pk}, ":p": {"S": "FOLDER#"}}}
        return [
            call(service="DynamoDB", operation="GetItem", TableName=state, pk=pk),
            call(service="DynamoDB", operation="Query", TableName=state, **query),
            call(service="DynamoDB", operation="PutItem", TableName=state, pk=pk),
            call(service="DynamoDB", operation="UpdateItem", TableName=state, pk=pk),
            call(service="DynamoDB", operation="TransactWriteItems", TransactItems=[
                {"kind": "Update", "TableName": state, "pk": pk}, {"kind": "Put", "TableName": state, "pk": pk}]),
            call(service="DynamoDB", operation="TransactWriteItems", TransactItems=[
                {"kind": "Update", "TableName": state, "pk": pk}, {"kind": "Delete", "TableName": state, "pk": pk}]),
            call(service="S3", operation="GetObject", bucket=mailbox, key="mailbox/mario@pec.example.test/1.eml"),
            call(service="S3", operation="PutObject", bucket=mailbox, key="mailbox/mario@pec.example.test/a-1.eml"),
            call(service="S3", operation="PutObject", bucket=raw, key="submitted/1.eml"),
            call(service="S3", operation="PutObject", bucket=raw, key="submitted/1.json"),
            call(service="S3", operation="GetObject", bucket=stack.resources["EvidenceBucket"]["BucketName"],
                 key="config/provider-index.ldif"),
            call(service="DynamoDB", operation="GetItem", TableName=state, pk="DOMAIN#studio.example"),
            call(service="S3", operation="PutObject", bucket=raw, key="inbound/1.eml"),
            call(service="S3", operation="PutObject", bucket=raw, key="inbound/1.json"),
            # The relay worker (OutboundRelay=smtp): a request off the relay queue, the signed
            # object, the message record, the per-recipient markers, a refusal recorded and
            # handed to the receipts step, a deferral put back on the relay queue.
            call(service="SQS", operation="ReceiveMessage", QueueUrl=relay),
            call(service="SQS", operation="DeleteMessage", QueueUrl=relay),
            call(service="SQS", operation="ChangeMessageVisibility", QueueUrl=relay),
            call(service="SQS", operation="SendMessage", QueueUrl=relay),
            call(service="S3", operation="GetObject", bucket=evidence, key="signed/msg/1/busta.eml"),
            call(service="DynamoDB", operation="GetItem", TableName=state, pk="MSG#1"),
            call(service="DynamoDB", operation="GetItem", TableName=state, pk="SENT#signed/msg/1/busta.eml"),
            call(service="DynamoDB", operation="PutItem", TableName=state, pk="SENT#signed/msg/1/busta.eml"),
            call(service="DynamoDB", operation="PutItem", TableName=state, pk="MSG#1"),
            call(service="DynamoDB", operation="UpdateItem", TableName=state, pk="MSG#1"),
            call(service="SQS", operation="SendMessage",
                 QueueUrl=stack.resources["ReceiptsQueue"]["QueueUrl"]),
        ]

    def test_the_edge_service_is_checked_against_its_task_role(self):
        """The edge is an ECS service, not a Lambda: its calls are checked against its task
        definition's TaskRoleArn (EdgeTaskRole), rendered although HasEdge is false locally.
        Its calls are allowed, and they use every permission of the role."""
        stack = self.stack()
        self.assertEqual(iam_check.principals(self.original["Resources"])["EdgeService"], "EdgeTaskRole")
        self.assertIn("EdgeService", stack.roles)
        self.assertEqual(stack.queues["EdgeService"], [])
        report = iam_check.check({STACK: stack}, self.edge_calls(stack), self.evaluator, unexercised={})
        self.assertEqual([r for r in report.denied if r.function == "EdgeService"], [])
        self.assertEqual([line for line in report.unused if line.startswith("EdgeService ")], [])

    def test_the_edge_cannot_reach_unsigned_evidence_other_items_or_the_signing_key(self):
        """The relay worker reads signed objects (signed/*) and message records (MSG#*); the
        edge reads no other evidence, writes none, reads no submission back, signs nothing."""
        stack = self.stack()
        evidence = stack.resources["EvidenceBucket"]
        raw = stack.resources["RawMailBucket"]
        mailbox = stack.resources["MailboxBucket"]
        state = stack.resources["StateTable"]
        key_id = stack.resources["SigningKey"]["KeyId"]
        call = lambda **kw: {"function": "EdgeService", "stack": STACK, "status": 200, **kw}  # noqa: E731
        calls = [
            call(service="S3", operation="GetObject", bucket=evidence["BucketName"], key="unsigned/msg/1/accettazione.eml"),
            call(service="S3", operation="GetObject", bucket=evidence["BucketName"], key="received/msg/1/x.eml"),
            call(service="S3", operation="GetObject", bucket=raw["BucketName"], key="submitted/1.eml"),
            call(service="S3", operation="PutObject", bucket=evidence["BucketName"], key="config/provider-index.ldif"),
            call(service="S3", operation="DeleteObject", bucket=mailbox["BucketName"], key="mailbox/a/1.eml"),
            call(service="DynamoDB", operation="GetItem", TableName=state["TableName"], pk="APIKEY#k"),
            call(service="DynamoDB", operation="TransactWriteItems", TransactItems=[
                {"kind": "Put", "TableName": state["TableName"], "pk": "TENANT#t"}]),
            call(service="KMS", operation="Sign", KeyId=key_id),
        ]
        self.assertEqual(self.denied(stack, calls), [
            ("EdgeService", "dynamodb:GetItem", state["Arn"]),
            ("EdgeService", "dynamodb:PutItem", state["Arn"]),
            ("EdgeService", "kms:Sign", stack.resources["SigningKey"]["Arn"]),
            ("EdgeService", "s3:DeleteObject", f"{mailbox['Arn']}/mailbox/a/1.eml"),
            ("EdgeService", "s3:GetObject", f"{evidence['Arn']}/received/msg/1/x.eml"),
            ("EdgeService", "s3:GetObject", f"{evidence['Arn']}/unsigned/msg/1/accettazione.eml"),
            ("EdgeService", "s3:GetObject", f"{raw['Arn']}/submitted/1.eml"),
            ("EdgeService", "s3:PutObject", f"{evidence['Arn']}/config/provider-index.ldif"),
        ])

    def test_a_call_to_a_resource_outside_the_template_is_an_error(self):
        stack = self.stack()
        call = {"function": "SignFunction", "stack": STACK, "service": "S3", "operation": "GetObject",
                "status": 200, "bucket": "someone-elses-bucket", "key": "x"}
        with self.assertRaisesRegex(iam_check.CheckError, "someone-elses-bucket"):
            iam_check.check({STACK: stack}, [call], self.evaluator)
        call = {**call, "service": "S3", "operation": "RestoreObject", "bucket": stack.resources["EvidenceBucket"]["BucketName"]}
        with self.assertRaisesRegex(iam_check.CheckError, "no IAM mapping"):
            iam_check.check({STACK: stack}, [call], self.evaluator)


class Evaluator(unittest.TestCase):
    def allowed(self, statement, action, resource, **context):
        request = iam_check.Request("F", "s", action, resource,
                                    tuple((k.replace("__", ":"), tuple(v)) for k, v in context.items()))
        return iam_check.Evaluator().allowed([statement], request)

    def test_wildcards_are_iams_not_regular_expressions(self):
        st = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/a.b?"}
        self.assertTrue(self.allowed(st, "s3:GetObject", "arn:aws:s3:::b/a.bc"))
        self.assertFalse(self.allowed(st, "s3:GetObject", "arn:aws:s3:::b/aXbc"))
        self.assertFalse(self.allowed(st, "s3:GetObject", "arn:aws:s3:::b/a.b"))
        self.assertTrue(self.allowed({**st, "Action": "S3:getobject"}, "s3:GetObject", "arn:aws:s3:::b/a.bc"))

    def test_explicit_deny_wins(self):
        allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
        deny = {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::b/*"}
        request = iam_check.Request("F", "s", "s3:PutObject", "arn:aws:s3:::b/k")
        self.assertFalse(iam_check.Evaluator().allowed([allow, deny], request))
        self.assertTrue(iam_check.Evaluator().allowed([allow], request))

    def test_conditions_are_strict(self):
        st = {"Effect": "Allow", "Action": "ses:SendRawEmail", "Resource": "*",
              "Condition": {"StringEquals": {"ses:FromAddress": "posta-certificata@d"}}}
        self.assertTrue(self.allowed(st, "ses:SendRawEmail", "x", ses__FromAddress=["posta-certificata@d"]))
        self.assertFalse(self.allowed(st, "ses:SendRawEmail", "x", ses__FromAddress=["other@d"]))
        self.assertFalse(self.allowed(st, "ses:SendRawEmail", "x"), "a missing key fails StringEquals")
        leading = {"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*",
                   "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["MSG#*", "DOM#*"]}}}
        self.assertTrue(self.allowed(leading, "dynamodb:GetItem", "t", dynamodb__LeadingKeys=["MSG#1"]))
        self.assertFalse(self.allowed(leading, "dynamodb:GetItem", "t", dynamodb__LeadingKeys=["BOX#a"]))
        with self.assertRaisesRegex(iam_check.CheckError, "NumericLessThan"):
            self.allowed({**st, "Condition": {"NumericLessThan": {"k": "1"}}}, "ses:SendRawEmail", "x")


if __name__ == "__main__":
    unittest.main()
