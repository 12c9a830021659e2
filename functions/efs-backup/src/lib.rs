//! efs-backup (skeleton: see the issue that builds it).
