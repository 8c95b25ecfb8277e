/// RFC 3339 / ISO 8601 time stamps in UTC, as OCI image configs carry them (`created`).
public enum Timestamp {
  /// `YYYY-MM-DDTHH:MM:SSZ` for whole seconds since 1970 (what Foundation's
  /// `ISO8601DateFormatter` writes by default). The date is the proleptic Gregorian one,
  /// from Howard Hinnant's `civil_from_days`.
  public static func iso8601(seconds: Int64) -> String {
    let (days, second) = floorDivision(seconds, 86_400)
    let (year, month, day) = civil(days: days)
    return pad(year, 4) + "-" + pad(month, 2) + "-" + pad(day, 2) + "T" + pad(second / 3600, 2) + ":"
      + pad(second / 60 % 60, 2) + ":" + pad(second % 60, 2) + "Z"
  }

  /// Year, month (1...12), day (1...31) of day `days` since 1970-01-01.
  public static func civil(days: Int64) -> (Int64, Int64, Int64) {
    let z = days + 719_468
    let (era, _) = floorDivision(z, 146_097)
    let doe = z - era * 146_097  // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365  // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)  // [0, 365]
    let mp = (5 * doy + 2) / 153  // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
  }

  static func floorDivision(_ a: Int64, _ b: Int64) -> (Int64, Int64) {
    let q = a / b, r = a % b
    return r < 0 ? (q - 1, r + b) : (q, r)
  }

  static func pad(_ v: Int64, _ width: Int) -> String {
    let digits = String(v.magnitude)
    let sign = v < 0 ? "-" : ""
    return sign + String(repeating: "0", count: max(0, width - digits.count)) + digits
  }
}
