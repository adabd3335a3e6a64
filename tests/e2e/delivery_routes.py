"""The delivery routes every smtpd version's test checks the same way (test_smtpd_delivery.py
for 6.8, test_smtpd76.py for 7.6): a mixin of tests for a harness.MailFlow TestCase whose
setUpClass moved bob's home to cls.bob_home (MailFlow.move_bob_home)."""
import os
import secrets


class SharedDeliveryRoutes:
    def test_3_catch_all(self):
        t = self.send(["nobody-%s@example.net" % secrets.token_hex(3)])
        # bob's custom home and mail location (maildir:~/Mail) from the directory
        self.assert_delivered_to("bob@example.net", t, maildir=os.path.join(self.bob_home, "Mail"))

    def test_4_sub_address(self):
        t = self.send(["John+Lists@Example.org"])
        self.assert_delivered_to("john@example.org", t)

    def test_5_alias_domain(self):
        t = self.send(["john@example.com"])
        self.assert_delivered_to("john@example.org", t)
        self.assertFalse(os.path.exists(os.path.join(self.vmail, "example.com")))
