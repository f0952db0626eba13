# The README's two commands are `make demo` and `make test`; .ci/run calls `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
export CONTAINERS_CONF := $(abspath molecule/resources/containers.conf)
export ANSIBLE_CONFIG := $(abspath ansible.cfg)
PACKAGES ?= $(SYSTEM_PACKAGES)
# chromium: the tests screenshot the browse page headless. python3-cryptography: the TLS
# role's unit test runs community.crypto with Debian's python, as on a host. iproute2: the
# verifier tests route an IPv6 range into the container's namespace. nginx and its Lua
# module: the proxy unit tests run the rendered configuration in a real NGINX (the benchmarks
# too); openssl: the TLS name-constraint tests call its CLI. prometheus (promtool), its
# node and NGINX exporters and haproxy: the metrics tests check the rendered rules and run
# the exporters. A unit test that skips fails the run (tests/unit/conftest.py), so what a
# test needs goes here.
SYSTEM_PACKAGES := podman runc debootstrap uidmap slirp4netns chromium python3-cryptography iproute2 \
  nginx libnginx-mod-http-lua openssl prometheus prometheus-node-exporter prometheus-nginx-exporter \
  haproxy
# Services those packages start on install; the tests run their own on free ports.
SYSTEM_SERVICES := nginx prometheus prometheus-node-exporter prometheus-nginx-exporter haproxy
BENCH_PACKAGES := wrk

.PHONY: help
help:
	@echo "make demo   - a channel host in a local container, a package published and installed over HTTPS"
	@echo "make test   - lint, unit tests and the Molecule scenarios"
	@echo "make bench  - benchmarks (print numbers)"
	@echo "make collection - the condaport.channels artifact (artifacts/collection/), wheel inside"
	@echo "make clean  - remove the demo container and generated artifacts"

.PHONY: system-deps
system-deps:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi; \
	for service in $(SYSTEM_SERVICES); do case " $$missing " in *" $$service "*) \
	  echo "stopping and disabling the distribution's $$service service: the tests run their own"; \
	  if [ -d /run/systemd/system ]; then systemctl disable --now $$service.service >/dev/null 2>&1; \
	  else service $$service stop >/dev/null 2>&1 || true; update-rc.d $$service disable >/dev/null 2>&1 || true; fi;; \
	esac; done

$(VENV)/.installed: requirements.txt requirements.yml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/ansible-galaxy collection install -r requirements.yml
	touch $@

.PHONY: deps
deps: system-deps $(VENV)/.installed

# Both supported Debian releases (12 and 13), each a base and a systemd image.
.PHONY: images
images: deps
	molecule/resources/build-images.sh 12 13

.PHONY: lint
lint: deps
	yamllint --strict .
	ansible-lint --profile production
	ruff check .
	ruff format --check .

# -rs lists the allowed skips' reasons. pytest exits 5 when it collects nothing: here that
# means the suite went missing, so it fails the target like any other error.
.PHONY: unit
unit: deps
	pytest -q -rs tests/unit

# Three lanes side by side (a converge mostly waits on round trips), balanced by measured
# times; each lane runs its scenarios one after another. An entry is scenario@release
# (Debian 12 or 13): every scenario runs on 12, and default, uploading and clients also on
# 13. A scenario's two releases never run at once (its containers and ports are fixed:
# run-scenarios.sh holds a lock per scenario, so the order within lanes keeps them apart:
# clients@12 first, clients@13 last).
# Logs: artifacts/molecule-logs/<scenario>@<release>.log.
MOLECULE_LANES ?= "default@12 acme@12 uploading@13 clients@13" \
  "clients@12 uploading@12 default@13 sample@12" \
  "publishing@12 edges@12 operations@12"

.PHONY: molecule
molecule: images
	molecule/resources/run-scenarios.sh $(MOLECULE_LANES)

.PHONY: test
test: lint unit molecule

.PHONY: collection
collection: deps
	scripts/build-collection.sh artifacts/collection

.PHONY: demo
demo: images
	scripts/demo.sh

.PHONY: bench
bench: PACKAGES = $(SYSTEM_PACKAGES) $(BENCH_PACKAGES)
# bench_upload_https measures against the demo host, so the demo comes up first.
bench: deps demo
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python -m bench.$$(basename $$b .py); done

.PHONY: clean
clean:
	-podman rm -f condaport-demo >/dev/null 2>&1
	rm -rf artifacts
