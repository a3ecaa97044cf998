//! The PEC rules as a pure library (no IO, no AWS SDK). See ARCHITECTURE.md.
