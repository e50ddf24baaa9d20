namespace Esm3Structure.Checks

open System
open System.Text

/// Format-blind mutations of text inputs (PDB, mmCIF, FASTA, JSON headers), driven by a seeded `Random`:
/// truncation at bytes, lines and tokens; bit flips; shifted columns; huge, negative, NaN and infinite numbers;
/// values of the wrong kind; missing tokens and lines.
module FuzzTextMutation =

    let private nastyNumbers =
        [|
            "NaN"
            "nan"
            "-nan"
            "Infinity"
            "-Infinity"
            "inf"
            "1e309"
            "-1e309"
            "1e-400"
            "99999999999999999999"
            "-99999999999999999999"
            "2147483647"
            "2147483648"
            "-2147483649"
            "9223372036854775807"
            "9223372036854775808"
            "18446744073709551615"
            "18446744073709551616"
            "-1"
            "0"
            "-0"
            "1.5"
            "-0.0"
            "1e3"
            "0x1F"
            "+5"
            ""
            "."
            "?"
            "-"
            "1,5"
            "\u0661\u0662"
            "4096"
            "4097"
            "1000000"
        |]

    let private nastyValues =
        [|
            "null"
            "true"
            "false"
            "\"x\""
            "\"\""
            "[]"
            "{}"
            "[1,2]"
            "[[1]]"
            "{\"a\":1}"
            "\"F32\""
            "\"BOOL\""
            "\"U64\""
            "\"F8_E4M3\""
            "'"
            "\""
            ";"
            "loop_"
            "_atom_site.Cartn_x"
            "data_x"
            "ATOM  "
            "END"
            "ENDMDL"
        |]

    let private isDelimiter (b: byte) =
        b = ' 'B
        || b = '\t'B
        || b = '\n'B
        || b = '\r'B
        || b = ','B
        || b = ':'B
        || b = '['B
        || b = ']'B
        || b = '{'B
        || b = '}'B
        || b = '"'B
        || b = '\''B

    let private isNumberByte (b: byte) =
        (b >= '0'B && b <= '9'B)
        || b = '-'B
        || b = '.'B
        || b = '+'B
        || b = 'e'B
        || b = 'E'B

    let private splice (bytes: byte[]) (start: int) (length: int) (insert: byte[]) =
        Array.concat [ bytes.[.. start - 1]; insert; bytes.[start + length ..] ]

    /// The (start, length) of the run around `pos` of bytes satisfying `inside`.
    let private runAt (inside: byte -> bool) (bytes: byte[]) (pos: int) =
        let mutable s = pos
        let mutable e = pos

        while s > 0 && inside bytes.[s - 1] do
            s <- s - 1

        while e < bytes.Length && inside bytes.[e] do
            e <- e + 1

        s, e - s

    /// Line starts (offsets) of a text.
    let private lineStarts (bytes: byte[]) =
        [|
            yield 0
            for i in 0 .. bytes.Length - 2 do
                if bytes.[i] = '\n'B then
                    yield i + 1
        |]

    /// (start, length) of a random line, without its newline.
    let private randomLine (random: Random) (bytes: byte[]) =
        let starts = lineStarts bytes
        let s = starts.[random.Next starts.Length]
        let nl = Array.IndexOf(bytes, '\n'B, s)
        let e = if nl < 0 then bytes.Length else nl
        s, e - s

    /// A number run (digits with sign, point, exponent) at or after a random position; None when there is none.
    let private randomNumber (random: Random) (bytes: byte[]) =
        if bytes.Length = 0 then
            None
        else
            let start = random.Next bytes.Length
            let isDigit (b: byte) = b >= '0'B && b <= '9'B

            let found =
                match Array.FindIndex(bytes, start, Predicate isDigit) with
                | -1 -> Array.FindIndex(bytes, Predicate isDigit)
                | i -> i

            if found < 0 then
                None
            else
                Some(runAt isNumberByte bytes found)

    let private pad (width: int) (text: string) =
        if text.Length >= width then text else text.PadLeft width

    let private ascii (s: string) = Encoding.UTF8.GetBytes s

    /// Text mutations: (name, mutate). Each returns new bytes.
    let mutate (random: Random) (maxBytes: int) (bytes: byte[]) : string * byte[] =
        let n = bytes.Length
        let pick (a: 'a[]) = a.[random.Next a.Length]

        match random.Next 16 with
        | 0 -> "truncate-byte", bytes.[.. random.Next(n + 1) - 1]
        | 1 ->
            let starts = lineStarts bytes
            let s = pick starts
            // Cut at a line start, or just before that line's newline (a line without its end).
            let cut = if random.Next 2 = 0 || s = 0 then s else s - 1
            "truncate-line", bytes.[.. cut - 1]
        | 2 when n > 0 ->
            let p = random.Next n
            let d = Array.FindIndex(bytes, p, Predicate isDelimiter)
            let cut = if d < 0 then n else d + random.Next 2
            "truncate-token", bytes.[.. min n cut - 1]
        | 3 when n > 0 ->
            let c = Array.copy bytes

            for _ in 1 .. 1 + random.Next 4 do
                let i = random.Next n
                c.[i] <- c.[i] ^^^ (1uy <<< random.Next 8)

            "flip-bit", c
        | 4 when n > 0 ->
            let c = Array.copy bytes

            for _ in 1 .. 1 + random.Next 4 do
                c.[random.Next n] <- pick [| 0uy; 0xffuy; 0x80uy; 0xc3uy; '\r'B; '\t'B; '\n'B; byte (random.Next 256) |]

            "random-byte", c
        | 5 ->
            // Shift the columns of one line: insert or delete a space inside it.
            let s, len = randomLine random bytes

            if len > 0 && random.Next 2 = 0 then
                "shift-left", splice bytes (s + random.Next len) 1 [||]
            else
                "shift-right", splice bytes (s + random.Next(len + 1)) 0 [| ' 'B |]
        | 6
        | 7 ->
            match randomNumber random bytes with
            | Some(s, len) ->
                let v = pick nastyNumbers
                // Half the time keep the width (fixed-column formats), else replace the run as is.
                let v = if random.Next 2 = 0 then pad len v else v

                let v =
                    if random.Next 4 = 0 && v.Length > len then
                        v.Substring(0, len)
                    else
                        v

                "number", splice bytes s len (ascii v)
            | None -> "number(none)", bytes
        | 8 when n > 0 ->
            let s, len = runAt (isDelimiter >> not) bytes (random.Next n)
            "value", splice bytes s len (ascii (pick nastyValues))
        | 9 when n > 0 ->
            let s, len = runAt (isDelimiter >> not) bytes (random.Next n)
            // Drop the token and, half the time, the delimiter after it (a missing field).
            let extra = if s + len < n && random.Next 2 = 0 then 1 else 0
            "delete-token", splice bytes s (len + extra) [||]
        | 10 ->
            let s, len = randomLine random bytes
            "delete-line", splice bytes s (min n (len + 1)) [||]
        | 11 ->
            let s, len = randomLine random bytes
            let line = bytes.[s .. s + len - 1]
            "duplicate-line", splice bytes s 0 (Array.append line [| '\n'B |])
        | 12 ->
            // Grow: one line repeated until the input approaches maxBytes ("a million residues" when large).
            let s, len = randomLine random bytes
            let line = Array.append bytes.[s .. s + len - 1] [| '\n'B |]
            let room = max 0 (maxBytes - n)
            let times = max 1 (room / line.Length)
            let times = if random.Next 2 = 0 then times else 1 + random.Next times
            "repeat-line", splice bytes s 0 (Array.concat (Array.create times line))
        | 13 ->
            let p = random.Next(n + 1)

            let garbage =
                pick
                    [|
                        [| 0xefuy; 0xbbuy; 0xbfuy |]
                        [| 0uy |]
                        [| 0xffuy; 0xfeuy |]
                        ascii "\r\n"
                        ascii "\n\n\n"
                        ascii "#"
                        ascii ";\n"
                        ascii "\"unterminated"
                        Array.init (1 + random.Next 16) (fun _ -> byte (random.Next 256))
                    |]

            "insert-garbage", splice bytes p 0 garbage
        | 14 ->
            "empty",
            pick
                [|
                    [||]
                    ascii " "
                    ascii "\n"
                    [| 0uy |]
                    [| 0xefuy; 0xbbuy; 0xbfuy |]
                    ascii "{}"
                    ascii "[]"
                    ascii "null"
                |]
        | _ ->
            // Swap two lines (order-sensitive formats: loop headers, MODEL/ENDMDL, JSON structure).
            let s1, l1 = randomLine random bytes
            let s2, l2 = randomLine random bytes

            if s1 = s2 then
                "swap-lines", bytes
            else
                let (a, la), (b, lb) = if s1 < s2 then (s1, l1), (s2, l2) else (s2, l2), (s1, l1)

                if a + la >= b then
                    "swap-lines", bytes
                else
                    let first = bytes.[a .. a + la - 1]
                    let second = bytes.[b .. b + lb - 1]

                    "swap-lines",
                    Array.concat [ bytes.[.. a - 1]; second; bytes.[a + la .. b - 1]; first; bytes.[b + lb ..] ]
