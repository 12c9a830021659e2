# Shortcuts for the project's commands (each is a script in scripts/).
.PHONY: test demo demo-once demo-stop invoke bench push-image functions

test:          ## every check, as CI runs it
	scripts/test

demo:          ## the sandbox: the whole system locally, a tour, then left running
	scripts/demo

demo-once:     ## the tour, checked, then torn down
	scripts/demo --once

demo-stop:     ## stop a running sandbox
	scripts/demo stop

invoke:        ## make invoke FN=config-redeploy EVENT=events/config-redeploy-s3-put.json
	@test -n "$(FN)" -a -n "$(EVENT)" || { echo "usage: make invoke FN=<function> EVENT=<event file>"; exit 2; }
	scripts/demo invoke "$(FN)" "$(EVENT)"

bench:         ## the benchmark report (release builds; minutes)
	scripts/bench

push-image:    ## the wiki image into ECR, prints its ImageUri: make push-image ARGS="--arch ARM64"
	scripts/push-image $(ARGS)

# --- sam build (BuildMethod: makefile, build_in_source in samconfig.toml) -----------------------
# SAM runs `make build-<LogicalId>` once per function with ARTIFACTS_DIR set. Each target builds
# the four functions in ONE cargo invocation (features unified, the four release links in
# parallel): the first target does the work, the other three find nothing to rebuild. Four
# separate `cargo lambda build --bin` runs (SAM's rust-cargolambda method) serialize the links
# and the compile tails (scripts/bench-sam-build measures both; figures in the README).
FUNCTIONS := config-redeploy secret-rotation efs-backup taskdef-janitor
LAMBDA_DIR ?= $(or $(CARGO_TARGET_DIR),target)/lambda

functions:     ## the four function packages for arm64 (release), as sam build makes them
	cargo lambda build --release --arm64 --lambda-dir "$(LAMBDA_DIR)" $(addprefix -p ,$(FUNCTIONS))

# $(1): the binary whose bootstrap becomes this function's artifact.
define artifact
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set: run sam build"; exit 2; }
	cp "$(LAMBDA_DIR)/$(1)/bootstrap" "$(ARTIFACTS_DIR)/bootstrap"
endef

build-ConfigRedeployFunction: functions
	$(call artifact,config-redeploy)
build-SecretRotationFunction: functions
	$(call artifact,secret-rotation)
build-EfsBackupFunction: functions
	$(call artifact,efs-backup)
build-TaskdefJanitorFunction: functions
	$(call artifact,taskdef-janitor)
