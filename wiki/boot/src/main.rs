//! The wiki container's entrypoint (skeleton: see the wiki-image issue).

fn main() {}
