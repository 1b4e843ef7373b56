//! ThingsBoard's nodes are Java. Where a rule must give the numbers a ThingsBoard node gives, it
//! rounds as Java does — in one place, so that the rules that do (`math`, `calculate-delta`)
//! cannot drift apart.

/// `BigDecimal.valueOf(v).setScale(scale, HALF_UP).doubleValue()`: rounds the shortest decimal
/// text of `v` (what `Double.toString` writes), not its binary value, so 2.675 → 2.68 as in
/// Java (binary rounding gives 2.67). `None` for a value that is not finite (Java throws).
pub fn round_half_up(v: f64, scale: u32) -> Option<f64> {
    if !v.is_finite() {
        return None;
    }
    // `{:e}` is the shortest round-trip text: `2.675e0` → digits 2,6,7,5 and the exponent.
    let sci = format!("{:e}", v.abs());
    let (mantissa, exp) = sci.split_once('e')?;
    let exp: i64 = exp.parse().ok()?;
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
    // Digit i (from 1) is worth 10^(point - i); keep those worth at least 10^-scale.
    let point = exp + 1;
    let keep = point + i64::from(scale);
    if keep < 0 {
        return Some(0.0);
    }
    if keep as usize >= digits.len() {
        return Some(v);
    }
    let keep = keep as usize;
    let mut kept = digits[..keep].to_vec();
    if digits[keep] >= 5 {
        // Add one in the last kept place, carrying.
        let mut i = kept.len();
        loop {
            if i == 0 {
                kept.insert(0, 1);
                break;
            }
            i -= 1;
            if kept[i] == 9 {
                kept[i] = 0;
            } else {
                kept[i] += 1;
                break;
            }
        }
    }
    if kept.is_empty() {
        return Some(0.0);
    }
    let text: String = kept.iter().map(|d| char::from(b'0' + d)).collect();
    let number: f64 = format!("{text}e{}", point - keep as i64).parse().ok()?;
    Some(if v < 0.0 { -number } else { number })
}

/// Java's `Double.toString(d)`: `2.0`, `0.001`, `1.0E7`, `1.0E-4`, `NaN`, `Infinity`.
pub fn double_text(d: f64) -> String {
    if d.is_nan() {
        return "NaN".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let a = d.abs();
    if a == 0.0 || (1e-3..1e7).contains(&a) {
        let text = format!("{d:?}");
        return if text.contains('.') { text } else { format!("{text}.0") };
    }
    let sci = format!("{d:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let mantissa = if mantissa.contains('.') { mantissa.to_string() } else { format!("{mantissa}.0") };
    format!("{mantissa}E{exp}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_the_decimal_text_half_up() {
        // Java: BigDecimal.valueOf(2.675).setScale(2, RoundingMode.HALF_UP) is 2.68.
        assert_eq!(round_half_up(2.675, 2), Some(2.68));
        assert_eq!(round_half_up(-2.5, 0), Some(-3.0));
        assert_eq!(round_half_up(0.0004, 2), Some(0.0));
        assert_eq!(round_half_up(9.996, 2), Some(10.0));
        assert_eq!(round_half_up(0.35, 1), Some(0.4));
        assert_eq!(round_half_up(12.5, 3), Some(12.5));
        assert_eq!(round_half_up(f64::NAN, 1), None);
    }

    #[test]
    fn doubles_are_written_as_java_writes_them() {
        assert_eq!(super::double_text(2.0), "2.0");
        assert_eq!(super::double_text(1e7), "1.0E7");
        assert_eq!(super::double_text(1e-4), "1.0E-4");
        assert_eq!(super::double_text(22.2), "22.2");
    }
}
