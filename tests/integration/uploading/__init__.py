"""Publishing over HTTPS (molecule/uploading), through the real NGINX, with the real upload
clients.

The host was converged with molecule/uploading's inventory (passed in as CONDAPORT_UPLOAD):
channel main (reader reads; uploader uploads; maintainer may also overwrite and delete),
public (anonymous to read, uploader uploads), other (reader reads, nobody uploads with a
password), and two upload tokens: ci-main (main, public) and ci-other (other, overwrite).

One module a suite, on one host: the real clients, who may upload where, bad uploads (the
same guarantees as the playbook path), in-place indexing, parallel uploaders, the service
killed mid-upload, secrets kept out of logs and files, and the writer account. verify.yml
runs the whole package, then, once the host switched to auth_basic, the tests marked
`basic_mode` again. Modules run in name order and tests in file order; package names
carry a per-run tag (site.RUN) so the suites can run again. The one suite that needs
another's packages, test_writer_account (test_indexing's), comes last by name.
"""
