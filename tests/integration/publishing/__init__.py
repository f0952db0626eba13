"""Publishing suites (molecule/publishing): run in the order verify.yml gives, on one host."""
