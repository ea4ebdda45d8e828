//! metal3 BareMetalHost and HardwareData types (metal3.io/v1alpha1), the CRD generator and kubectl-style printing.
//!
//! Skeleton: being built (see issue 5).
