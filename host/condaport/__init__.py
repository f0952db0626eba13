"""condaport's host side: what runs on a channel host, one module per concern.

- config:   the host configuration file the condaport_tools role renders
- packages: reading and validating package files
- locking:  one writer per channel
- index:    keeping each subdir's repodata in step with its files (condaport-index)
- publish:  placing staged packages, removal and retention (condaport-publish)
- batch:    one playbook publish in one process (condaport-publish publish)
- browse:   the channel's static browse page
- verifier: allow/deny answers for NGINX's access check (condaport-verifier)

The command-line tools print one JSON object on stdout, which the playbooks read.
"""
