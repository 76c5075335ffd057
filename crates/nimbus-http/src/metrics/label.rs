//! Label values escaped as the text format requires: prometheus-client writes them verbatim,
//! and a mapping's name is the host's free text.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// A label value with `\`, `"` and line feeds escaped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::gauge::ConstGauge;

    use super::*;

    #[derive(Debug)]
    struct OneGauge;

    impl prometheus_client::collector::Collector for OneGauge {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let gauge = ConstGauge::new(1i64);
            let mut metric = encoder.encode_descriptor("g", "h", None, gauge.metric_type())?;
            gauge.encode(metric.encode_family(&[("l", Escaped("a\"b\\c\nd"))])?)
        }
    }

    #[test]
    fn quotes_backslashes_and_line_feeds_are_escaped() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(OneGauge));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains(r#"g{l="a\"b\\c\nd"} 1"#), "{text}");
    }
}
