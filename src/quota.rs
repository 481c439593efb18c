//! Layerwise sparsity quotas (placeholder; being written).
