// Quoting for the few places that must put a name or a text into SQL themselves (identifiers
// cannot be bind parameters). Everything else goes through parameters.

/** An identifier, quoted: case kept, `"` doubled (`my "t"` → `"my ""t"""`). */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** A string literal, quoted: `'` doubled (standard_conforming_strings, on since PostgreSQL 9.1). */
export function quoteLiteral(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}
