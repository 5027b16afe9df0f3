//! The control plane. Today: [`plan`], the seed's sizing rules (section 3 of
//! `shared/seed/README.md`) as a pure function behind `alcubierre plan`. Activation, placement,
//! failure handling and the REST API follow (issue 5); they reach the data path only through
//! `types`, `store` and narrow interfaces.

pub mod plan;
