"""Tests of deploy_check.py's pre-processor and comparison helpers (no AWS calls).

Run: <venv>/bin/python -m unittest discover -s infra/local -p 'test_*.py'  (infra/test.sh does).
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import bootstrap  # noqa: E402
import deploy_check as dc  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TEMPLATE = os.path.join(REPO, "template.yaml")


def preprocess(template, conditions=None, keep=()):
    lines = []
    out, removed = dc.preprocess(template, set(keep), conditions or {}, lines.append)
    return out, removed, "\n".join(lines)


class RealTemplate(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        original, cls.transformed = bootstrap.load_template(TEMPLATE, {})
        params = bootstrap.parameters_from(original, {k: v for k, v in bootstrap.LOCAL_PROFILE.items()
                                                      if k in original["Parameters"]})
        cls.conditions = bootstrap.evaluate_conditions(
            cls.transformed, bootstrap.Resolver("pec-cfn", "eu-south-1", params))
        cls.processed, cls.removed, cls.log = preprocess(cls.transformed, cls.conditions)

    def test_only_listed_types_and_false_conditions_are_removed(self):
        for logical, reason in self.removed.items():
            res = self.transformed["Resources"][logical]
            self.assertTrue(res["Type"] in dc.REMOVED or res.get("Condition") in
                            {c for c, v in self.conditions.items() if not v}, (logical, reason))

    def test_nothing_left_refers_to_a_removed_resource(self):
        for logical, res in self.processed["Resources"].items():
            self.assertFalse(bootstrap.references(res.get("Properties", {})) & set(self.removed), logical)
            deps = res.get("DependsOn", [])
            self.assertFalse(set([deps] if isinstance(deps, str) else deps) & set(self.removed), logical)
        for name, output in self.processed.get("Outputs", {}).items():
            self.assertFalse(bootstrap.references(output["Value"]) & set(self.removed), name)

    def test_every_removed_type_is_named_with_its_reason(self):
        for rtype in {self.transformed["Resources"][r]["Type"] for r in self.removed} & set(dc.REMOVED):
            self.assertIn(f"removed {rtype} x", self.log)
            self.assertIn(dc.REMOVED[rtype], self.log)

    def test_what_bootstrap_creates_is_deployed_too(self):
        rows = bootstrap.check_coverage(self.transformed, set(bootstrap.Creator.HANDLERS), self.conditions)
        created = {logical for logical, _, action in rows if action == "create"}
        # The one exception, by design: LocalStack cannot create an SES identity.
        self.assertEqual(created - set(self.processed["Resources"]), {"SendingIdentity"})

    def test_no_dependency_cycle(self):
        bootstrap.creation_order(self.processed["Resources"])


class Preprocessor(unittest.TestCase):
    def template(self, **resources):
        base = {
            "Fn": {"Type": "AWS::Lambda::Function", "Properties": {"FunctionName": {"Fn::Sub": "${AWS::StackName}-fn"}}},
            "Api": {"Type": "AWS::ApiGatewayV2::Api", "Properties": {}},
            "Q": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "q"}},
        }
        return {"Resources": {**base, **resources}, "Outputs": {}}

    def test_function_arn_in_a_sub_gets_the_aws_value(self):
        tpl = self.template(Rule={"Type": "AWS::Events::Rule", "Properties": {
            "Targets": [{"Id": "t", "Arn": {"Fn::Sub": "${Fn.Arn}"}}], "Description": {"Ref": "Fn"}}})
        out, removed, log = preprocess(tpl)
        props = out["Resources"]["Rule"]["Properties"]
        self.assertEqual(props["Description"], {"Fn::Sub": "${AWS::StackName}-fn"})
        text, variables = props["Targets"][0]["Arn"]["Fn::Sub"]
        self.assertEqual(variables["PecStandInFnArn"]["Fn::Sub"],
                         "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-fn")
        self.assertNotIn("Rule", removed)
        self.assertIn("Rule: !GetAtt Fn.Arn", log)

    def test_a_reference_without_stand_in_removes_the_referrer(self):
        tpl = self.template(Alarm={"Type": "AWS::CloudWatch::Alarm", "Properties": {"AlarmDescription": {"Ref": "Api"}}})
        out, removed, log = preprocess(tpl)
        self.assertNotIn("Alarm", out["Resources"])
        self.assertIn("refers to Api", removed["Alarm"])

    def test_depends_on_and_outputs_are_cut(self):
        tpl = self.template(Q2={"Type": "AWS::SQS::Queue", "DependsOn": ["Fn", "Q"], "Properties": {}})
        tpl["Outputs"] = {"Url": {"Value": {"Fn::Sub": "https://${Api}.example"}}, "Q": {"Value": {"Ref": "Q"}}}
        out, _, log = preprocess(tpl)
        self.assertEqual(out["Resources"]["Q2"]["DependsOn"], ["Q"])
        self.assertEqual(list(out["Outputs"]), ["Q"])
        self.assertIn("output Url dropped", log)

    def test_false_condition_resources_go(self):
        tpl = self.template(Edge={"Type": "AWS::SQS::Queue", "Condition": "HasEdge", "Properties": {}})
        out, removed, _ = preprocess(tpl, {"HasEdge": False})
        self.assertNotIn("Edge", out["Resources"])
        self.assertEqual(removed["Edge"], "condition HasEdge is false")

    def test_keep_type(self):
        out, removed, _ = preprocess(self.template(), keep=("AWS::ApiGatewayV2::Api",))
        self.assertIn("Api", out["Resources"])
        self.assertNotIn("Api", removed)


class Parameters(unittest.TestCase):
    TEMPLATE = {
        "Parameters": {
            "Url": {"Type": "String", "Default": "", "AllowedPattern": "^$|^https://.+$"},
            "Count": {"Type": "Number", "Default": 5, "MinValue": 1},
            "Image": {"Type": "String", "Default": ""},
            "Subnets": {"Type": "CommaDelimitedList", "Default": ""},
        },
        "Rules": {"EdgeNeedsSubnets": {
            "RuleCondition": {"Fn::Not": [{"Fn::Equals": [{"Ref": "Image"}, ""]}]},
            "Assertions": [{"Assert": {"Fn::Not": [{"Fn::Contains": [{"Ref": "Subnets"}, ""]}]},
                            "AssertDescription": "Subnets are required"}]}},
    }

    def check(self, **values):
        base = {"Url": "", "Count": 5, "Image": "", "Subnets": ""}
        return dc.check_parameters(self.TEMPLATE, {**base, **values})

    def test_defaults_pass(self):
        self.assertEqual(self.check(), [])

    def test_constraints_and_rules_fail_as_in_aws(self):
        self.assertEqual(len(self.check(Url="http://x", Count="0")), 2)
        self.assertEqual(self.check(Image="img"), ["rule EdgeNeedsSubnets: Subnets are required"])
        self.assertEqual(self.check(Image="img", Subnets="subnet-1,subnet-2"), [])

    def test_the_real_template_with_the_local_profile(self):
        original, transformed = bootstrap.load_template(TEMPLATE, {})
        profile = {k: v for k, v in bootstrap.LOCAL_PROFILE.items() if k in original["Parameters"]}
        self.assertEqual(dc.check_parameters(transformed, bootstrap.parameters_from(original, profile)), [])


class Comparison(unittest.TestCase):
    def test_normalizer_replaces_whole_stack_names_and_key_ids(self):
        n = dc.Normalizer("pec-cfn", {"1234-abcd": "SigningKey"})
        self.assertEqual(n({"a": "arn:aws:kms:r:1:key/1234-abcd", "pec-cfn-q": "pec-cfnx-q", "n": 5}),
                         {"a": "arn:aws:kms:r:1:key/{key:SigningKey}", "{stack}-q": "pec-cfnx-q", "n": 5.0})

    def test_diff_names_the_path(self):
        self.assertEqual(dc.diff({"RedrivePolicy": {"maxReceiveCount": 5}}, {"RedrivePolicy": {"maxReceiveCount": 7}}),
                         ["/RedrivePolicy/maxReceiveCount: bootstrap 5 != deploy 7"])

    def test_s3_explanation_touches_only_what_localstack_ignores(self):
        exp = {"ObjectLock": 1, "Notifications": [1], "Lifecycle": [1], "Versioning": "Enabled"}
        act = {"ObjectLock": 1, "Notifications": [2], "Lifecycle": [], "Versioning": "Enabled"}
        e, a = dc._s3_ignored(exp, act, "eu-south-1")
        self.assertEqual(dc.diff(e, a), ["/Notifications[0]: bootstrap 1 != deploy 2"])


if __name__ == "__main__":
    unittest.main()
