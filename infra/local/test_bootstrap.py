"""Tests of the template checks in bootstrap.py: each invariant must fail when broken.

Run: <venv>/bin/python -m unittest discover -s infra/local -p 'test_*.py'  (infra/test.sh does).
"""

import copy
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import bootstrap  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEMPLATE = os.path.join(REPO, "template.yaml")


class TemplateChecks(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.original, cls.transformed = bootstrap.load_template(TEMPLATE, {})

    def test_real_template_passes(self):
        checked = bootstrap.check_invariants(self.original, self.transformed, TEMPLATE)
        self.assertTrue(any("one signer" in c for c in checked))

    def test_second_role_with_kms_sign_is_refused(self):
        transformed = copy.deepcopy(self.transformed)
        transformed["Resources"]["Intruder"] = {
            "Type": "AWS::IAM::Role",
            "Properties": {"Policies": [{"PolicyDocument": {"Statement": [
                {"Effect": "Allow", "Action": ["s3:GetObject", "kms:*"], "Resource": "*"}]}}]},
        }
        with self.assertRaisesRegex(bootstrap.BootstrapError, "Intruder"):
            bootstrap.check_invariants(self.original, transformed, TEMPLATE)

    def test_key_policy_without_the_deny_is_refused(self):
        original = copy.deepcopy(self.original)
        statements = original["Resources"]["SigningKey"]["Properties"]["KeyPolicy"]["Statement"]
        original["Resources"]["SigningKey"]["Properties"]["KeyPolicy"]["Statement"] = [
            st for st in statements if st.get("Effect") != "Deny"]
        with self.assertRaisesRegex(bootstrap.BootstrapError, "deny kms:Sign"):
            bootstrap.check_invariants(original, self.transformed, TEMPLATE)

    def test_sign_role_without_head_on_signed_is_refused(self):
        # Issue 11, defect 4: HeadObject is authorised as s3:GetObject.
        original = copy.deepcopy(self.original)
        policies = original["Resources"]["SignFunctionRole"]["Properties"]["Policies"]
        for p in policies:
            p["PolicyDocument"]["Statement"] = [
                st for st in p["PolicyDocument"]["Statement"] if st.get("Sid") != "HeadSignedForIdempotency"]
        with self.assertRaisesRegex(bootstrap.BootstrapError, "HeadObject"):
            bootstrap.check_invariants(original, self.transformed, TEMPLATE)

    def test_function_without_a_crate_is_refused(self):
        original = copy.deepcopy(self.original)
        fn = copy.deepcopy(original["Resources"]["SignFunction"])
        fn["Properties"]["CodeUri"] = "target/lambda/pec-nowhere/bootstrap.zip"
        original["Resources"]["GhostFunction"] = fn
        with self.assertRaisesRegex(bootstrap.BootstrapError, "differ"):
            bootstrap.check_invariants(original, self.transformed, TEMPLATE)

    def test_sqs_event_without_partial_batch_failures_is_refused(self):
        original = copy.deepcopy(self.original)
        original["Resources"]["SignFunction"]["Properties"]["Events"]["SignQueue"]["Properties"][
            "FunctionResponseTypes"] = []
        with self.assertRaisesRegex(bootstrap.BootstrapError, "ReportBatchItemFailures"):
            bootstrap.check_invariants(original, self.transformed, TEMPLATE)

    def test_a_name_without_the_stack_name_is_refused(self):
        original = copy.deepcopy(self.original)
        original["Resources"]["RawMailBucket"]["Properties"]["BucketName"] = "pec-raw"
        original["Resources"]["EventBus"]["Properties"]["Name"] = {"Fn::Sub": "pec-events"}
        with self.assertRaisesRegex(bootstrap.BootstrapError, "EventBus.Name, RawMailBucket.BucketName"):
            bootstrap.check_invariants(original, self.transformed, TEMPLATE)

    def test_ses_identities_are_created_not_skipped(self):
        rows = bootstrap.check_coverage(self.transformed, set(bootstrap.Creator.HANDLERS))
        self.assertIn(("SendingIdentity", "AWS::SES::EmailIdentity", "create"), rows)

    def test_unknown_resource_type_is_refused(self):
        transformed = copy.deepcopy(self.transformed)
        transformed["Resources"]["Mystery"] = {"Type": "AWS::Foo::Bar", "Properties": {}}
        with self.assertRaisesRegex(bootstrap.BootstrapError, "neither creates nor skips"):
            bootstrap.check_coverage(transformed, set(bootstrap.Creator.HANDLERS))

    def test_creation_order_puts_dependencies_first(self):
        order = bootstrap.creation_order(self.transformed["Resources"])
        self.assertLess(order.index("IngressQueue"), order.index("RawMailBucket"))
        self.assertLess(order.index("SigningKey"), order.index("SigningKeyAlias"))


if __name__ == "__main__":
    unittest.main()
