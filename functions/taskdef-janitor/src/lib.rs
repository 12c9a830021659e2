//! taskdef-janitor (skeleton: see the issue that builds it).
