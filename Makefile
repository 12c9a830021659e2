# Shortcuts for the project's commands (each is a script in scripts/).
.PHONY: test demo demo-once demo-stop invoke bench push-image

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
