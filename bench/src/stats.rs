//! Medians and percentiles of measured samples.

pub fn median(samples: &[f64]) -> f64 {
    percentile(samples, 50)
}

/// The nearest-rank percentile; NaN for no samples.
pub fn percentile(samples: &[f64], percent: usize) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (percent * sorted.len())
        .div_ceil(100)
        .clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let samples = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(median(&samples), 3.0);
        assert_eq!(percentile(&samples, 99), 5.0);
        assert_eq!(percentile(&samples, 1), 1.0);
        assert!(median(&[]).is_nan());
    }
}
