"""Tests of the template checks in bootstrap.py: each invariant must fail when broken.

Run: <venv>/bin/python -m unittest discover -s infra/local -p 'test_*.py'  (infra/test.sh does).
"""

import copy
import json
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

    def edge_plan(self, overrides):
        original, transformed = bootstrap.load_template(TEMPLATE, overrides)
        params = bootstrap.parameters_from(original, overrides)
        resolver = bootstrap.Resolver("pec-test", "eu-south-1", params)
        conditions = bootstrap.evaluate_conditions(transformed, resolver)
        handled = set(bootstrap.Creator.HANDLERS)
        rows = bootstrap.check_coverage(transformed, handled, conditions)
        created = bootstrap.to_create(transformed, handled, conditions)
        outputs = bootstrap.outputs_to_write(original, conditions, set(created))
        edge = {logical for logical, res in original["Resources"].items() if res.get("Condition") == "HasEdge"}
        return conditions, rows, created, outputs, edge

    def test_the_edge_service_is_ignored_locally_without_an_image(self):
        """EdgeImageUri empty (the default, and every local stack): HasEdge is false and none of
        the edge's resources or outputs exists; the functions' resources are created as before."""
        conditions, rows, created, outputs, edge = self.edge_plan({})
        self.assertFalse(conditions["HasEdge"])
        self.assertGreaterEqual(len(edge), 10)
        self.assertTrue({"EdgeService", "EdgeTaskRole", "EdgeLoadBalancer"} <= edge)
        for logical, _, action in rows:
            if logical in edge:
                self.assertEqual(action, "skip: condition HasEdge is false", logical)
        self.assertFalse(edge & set(created))
        self.assertTrue({"StateTable", "RawMailBucket", "MailboxBucket", "IngressQueue"} <= set(created))
        self.assertNotIn("EdgeLoadBalancerDnsName", outputs)
        self.assertIn("StateTableName", outputs)

    def test_with_an_image_the_edge_still_creates_nothing_locally(self):
        """EdgeImageUri given: ECS, the load balancer and auto scaling are skipped by type (the
        runner hosts the edge), and the output naming the load balancer is left out."""
        conditions, rows, created, outputs, edge = self.edge_plan(
            {"EdgeImageUri": "000000000000.dkr.ecr.eu-south-1.amazonaws.com/pec-edge:1"})
        self.assertTrue(conditions["HasEdge"])
        actions = {logical: action for logical, _, action in rows if logical in edge}
        self.assertEqual(actions["EdgeService"], "skip: " + bootstrap.EDGE_LOCALLY)
        self.assertFalse(any(a == "create" for a in actions.values()), actions)
        self.assertFalse(edge & set(created))
        self.assertNotIn("EdgeLoadBalancerDnsName", outputs)

    def test_the_edge_listens_on_587_993_143_995_25_and_not_465(self):
        """The submission gateway serves no implicit TLS yet: no 465 listener, target or port. The
        listeners keep the standard ports; the container (user 10001, no CAP_NET_BIND_SERVICE)
        binds unprivileged ones, and every piece between them agrees."""
        resources = self.original["Resources"]
        to_container = {587: 2587, 993: 2993, 143: 2143, 995: 2995, 25: 2525}
        listeners = {r["Properties"]["Port"]: r["Properties"]["DefaultActions"][0]["TargetGroupArn"]["Ref"]
                     for r in resources.values()
                     if r["Type"] == "AWS::ElasticLoadBalancingV2::Listener"
                     and r["Properties"]["LoadBalancerArn"] == {"Ref": "EdgeLoadBalancer"}}
        self.assertEqual(set(listeners), set(to_container))
        for port, group in listeners.items():
            self.assertEqual(resources[group]["Properties"]["Port"], to_container[port], group)
        container = resources["EdgeTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
        self.assertEqual({m["ContainerPort"] for m in container["PortMappings"]}, set(to_container.values()))
        # Entries under a condition (Fn::If: the relay worker's queue) bind nothing.
        binds = {e["Value"].rsplit(":", 1)[1] for e in container["Environment"]
                 if "Name" in e and e["Name"] in ("PEC_EDGE_SUBMISSION", "PEC_EDGE_IMAPS", "PEC_EDGE_IMAP", "PEC_EDGE_POP3S", "PEC_EDGE_MX")}
        self.assertEqual(binds, {str(p) for p in to_container.values()})
        self.assertTrue(all(p > 1024 for p in to_container.values()))
        service = resources["EdgeService"]["Properties"]
        self.assertEqual({(lb["ContainerPort"], lb["TargetGroupArn"]["Ref"]) for lb in service["LoadBalancers"]
                          if lb.get("ContainerName") == "edge"},
                         {(to_container[p], g) for p, g in listeners.items()})
        ingress = {(r["FromPort"], r["ToPort"]) for r in
                   resources["EdgeTaskSecurityGroup"]["Properties"]["SecurityGroupIngress"]}
        self.assertEqual(ingress, {(p, p) for p in to_container.values()})

    def test_rspamd_is_reached_only_by_the_scan_function(self):
        """The spam engine (RunsRspamd): its own service behind an internal NLB on 11333; scan
        function -> NLB security group -> rspamd security group, nothing else in; the edge
        service untouched (an rspamd that fails never takes SMTP/IMAP/POP3 down); the scan
        function in the VPC and pointed at that NLB; without it, SpamEngineUrl."""
        resources = self.original["Resources"]
        self.assertEqual(resources["SpamEngineLoadBalancer"]["Properties"]["Scheme"], "internal")
        self.assertEqual(resources["SpamEngineLoadBalancer"]["Properties"]["SecurityGroups"],
                         [{"Ref": "SpamEngineLoadBalancerSecurityGroup"}])
        self.assertEqual(resources["SpamEngineListener"]["Properties"]["Port"], 11333)
        ingress = lambda name: resources[name]["Properties"]["SecurityGroupIngress"]  # noqa: E731
        self.assertEqual([r["SourceSecurityGroupId"] for r in ingress("SpamEngineLoadBalancerSecurityGroup")],
                         [{"Ref": "ScanFunctionSecurityGroup"}])
        self.assertEqual([r["SourceSecurityGroupId"] for r in ingress("SpamEngineSecurityGroup")],
                         [{"Ref": "SpamEngineLoadBalancerSecurityGroup"}])
        for name in ("SpamEngineLoadBalancer", "SpamEngineListener", "SpamEngineTargetGroup",
                     "SpamEngineService", "SpamEngineTaskDefinition", "SpamEngineSecurityGroup",
                     "SpamEngineLoadBalancerSecurityGroup", "ScanFunctionSecurityGroup"):
            self.assertEqual(resources[name]["Condition"], "RunsRspamd", name)
        edge = resources["EdgeTaskDefinition"]["Properties"]["ContainerDefinitions"]
        self.assertEqual([c["Name"] for c in edge], ["edge"])
        self.assertNotIn("11333", json.dumps(resources["EdgeService"]))
        scan = resources["ScanFunction"]["Properties"]
        url = scan["Environment"]["Variables"]["PEC_SPAM_URL"]["Fn::If"]
        self.assertEqual(url[0], "RunsRspamd")
        self.assertEqual(url[2], {"Ref": "SpamEngineUrl"})
        self.assertEqual(scan["VpcConfig"]["Fn::If"][0], "RunsRspamd")
        conditions, rows, created, outputs, edge = self.edge_plan(
            {"EdgeImageUri": "000000000000.dkr.ecr.eu-south-1.amazonaws.com/pec-edge:1"})
        self.assertFalse(conditions["RunsRspamd"], "no rspamd image, no subnets: SpamEngineUrl")

    def test_a_conditional_resource_of_an_unknown_type_is_still_refused(self):
        transformed = copy.deepcopy(self.transformed)
        transformed["Resources"]["Mystery"] = {"Type": "AWS::Foo::Bar", "Condition": "HasEdge", "Properties": {}}
        with self.assertRaisesRegex(bootstrap.BootstrapError, "neither creates nor skips"):
            bootstrap.check_coverage(transformed, set(bootstrap.Creator.HANDLERS))

    def test_conditions_and_fn_if(self):
        template = {"Conditions": {
            "A": {"Fn::Equals": [{"Ref": "P"}, ""]},
            "B": {"Fn::Not": [{"Condition": "A"}]},
            "C": {"Fn::Or": [{"Condition": "A"}, {"Fn::And": [{"Condition": "B"}, {"Fn::Equals": ["x", "y"]}]}]},
        }}
        resolver = bootstrap.Resolver("s", "r", {"P": "set"})
        self.assertEqual(bootstrap.evaluate_conditions(template, resolver), {"A": False, "B": True, "C": False})
        self.assertEqual(resolver.resolve({"Fn::If": ["B", "yes", "no"]}), "yes")
        with self.assertRaisesRegex(bootstrap.BootstrapError, "Fn::Select"):
            bootstrap.evaluate_conditions({"Conditions": {"D": {"Fn::Select": [0, ["a"]]}}}, resolver)

    def test_creation_order_puts_dependencies_first(self):
        order = bootstrap.creation_order(self.transformed["Resources"])
        self.assertLess(order.index("IngressQueue"), order.index("RawMailBucket"))
        self.assertLess(order.index("SigningKey"), order.index("SigningKeyAlias"))


if __name__ == "__main__":
    unittest.main()
