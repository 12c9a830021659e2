//! config-redeploy (skeleton: see the issue that builds it).
