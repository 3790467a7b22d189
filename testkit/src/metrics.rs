//! Reading a Prometheus text exposition, as the tests read the proxy's and
//! the workers' `/metrics`.

/// A value from Prometheus text: the sample of `name` whose labels include
/// every `(label, value)` pair given.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels.iter().all(|(label, wanted)| {
                label_text
                    .split(',')
                    .any(|pair| pair == format!("{label}=\"{wanted}\""))
            });
            all.then(|| value.parse().ok()).flatten()
        })
}
