namespace Esm3Structure.Ablations

open System
open System.Globalization
open System.Security
open System.Text

/// One line of a line chart: a mean curve with an optional spread band (mean ± spread) around it.
type SvgSeries =
    {
        Name: string
        X: float[]
        Y: float[]
        /// Half-width of the band at each point (e.g. the standard deviation over seeds); NaN or 0: no band there.
        Spread: float[]
    }

/// One bar of a bar chart, with an error bar of ± `Error` (NaN or 0: none).
type SvgBar =
    {
        Label: string
        Value: float
        Error: float
    }

/// Small, dependency-free static SVG charts (axes, ticks, grid, labels, legend, bands and error bars), so that an
/// ablation's charts are viewable where no script runs (e.g. on GitHub). The interactive pages are Plotly.NET's
/// (`AblationCharts`); no image exporter for them works here (Plotly.NET.ImageExport is not in the registry).
module AblationSvg =

    /// Colours of successive series: the "category10" palette of d3 / matplotlib's "tab10".
    let palette =
        [|
            "#1f77b4"
            "#ff7f0e"
            "#2ca02c"
            "#d62728"
            "#9467bd"
            "#8c564b"
            "#e377c2"
            "#7f7f7f"
            "#bcbd22"
            "#17becf"
        |]

    /// The colour of series `i` (the palette repeats).
    let color (i: int) =
        palette.[((i % palette.Length) + palette.Length) % palette.Length]

    /// Chart width and height in SVG user units (pixels).
    [<Literal>]
    let Width = 760.0

    /// See `Width`.
    [<Literal>]
    let Height = 440.0

    let private inv = CultureInfo.InvariantCulture

    /// A coordinate as written in the SVG: two decimals, invariant culture.
    let private c (x: float) = x.ToString("0.##", inv)

    let private esc (s: string) = SecurityElement.Escape s

    /// A tick label: at most 4 significant digits, invariant culture.
    let formatTick (x: float) =
        if x = 0.0 then "0" else x.ToString("G4", inv)

    /// "Nice" tick values (1, 2, 2.5 or 5 × 10^k steps) covering [lo, hi] with about `target` intervals; the first
    /// tick is ≤ lo and the last ≥ hi. A degenerate or non-finite range is widened first.
    let niceTicks (lo: float) (hi: float) (target: int) : float[] =
        let lo, hi =
            if not (Double.IsFinite lo && Double.IsFinite hi) then
                0.0, 1.0
            elif hi < lo then
                hi, lo
            else
                lo, hi

        let lo, hi =
            if hi - lo > 1e-12 * max 1.0 (abs hi) then
                lo, hi
            else
                let pad = if lo = 0.0 then 1.0 else abs lo * 0.1
                lo - pad, hi + pad

        let raw = (hi - lo) / float (max 1 target)
        let magnitude = Math.Pow(10.0, Math.Floor(Math.Log10 raw))

        let step =
            [| 1.0; 2.0; 2.5; 5.0; 10.0 |]
            |> Array.map (fun m -> m * magnitude)
            |> Array.find (fun s -> s >= raw * (1.0 - 1e-9))

        let first = Math.Floor(lo / step + 1e-9)
        let last = Math.Ceiling(hi / step - 1e-9)
        // k · step, rounded to the step's decimals so that 0.1 · 3 prints as 0.3
        let decimals = max 0 (min 15 (int (-Math.Floor(Math.Log10 step)) + 1))

        [| for k in first..last -> Math.Round(k * step, decimals) |]

    /// The frame of a chart: plot area, y grid and ticks, axis titles and the chart title. Returns the builder and
    /// the y mapping (value -> SVG y).
    let private frame
        (sb: StringBuilder)
        (title: string)
        (yLabel: string)
        (left: float, top: float, right: float, bottom: float)
        (yTicks: float[])
        =
        let y0, y1 = yTicks.[0], yTicks.[yTicks.Length - 1]

        let mapY (v: float) =
            bottom - (v - y0) / (y1 - y0) * (bottom - top)

        sb.AppendFormat(
            inv,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
            + "font-family=\"sans-serif\" font-size=\"12\">\n",
            c Width,
            c Height
        )
        |> ignore

        sb.AppendFormat("<title>{0}</title>\n", esc title) |> ignore
        sb.Append("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n") |> ignore

        sb.AppendFormat(
            "<text x=\"{0}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{1}</text>\n",
            c ((left + right) / 2.0),
            esc title
        )
        |> ignore

        for t in yTicks do
            let y = mapY t

            sb.AppendFormat(
                "<line class=\"grid\" x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#e5e5e5\"/>\n",
                c left,
                c y,
                c right
            )
            |> ignore

            sb.AppendFormat(
                "<text class=\"ytick\" x=\"{0}\" y=\"{1}\" text-anchor=\"end\" dominant-baseline=\"middle\">{2}</text>\n",
                c (left - 6.0),
                c y,
                esc (formatTick t)
            )
            |> ignore

        sb.AppendFormat(
            "<text x=\"16\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {0})\">{1}</text>\n",
            c ((top + bottom) / 2.0),
            esc yLabel
        )
        |> ignore

        sb.AppendFormat(
            "<path class=\"axes\" d=\"M{0},{1} V{2} H{3}\" fill=\"none\" stroke=\"#333\"/>\n",
            c left,
            c top,
            c bottom,
            c right
        )
        |> ignore

        mapY

    let private finiteRange (values: float seq) =
        let xs = values |> Seq.filter Double.IsFinite |> Array.ofSeq

        if xs.Length = 0 then
            0.0, 1.0
        else
            Array.min xs, Array.max xs

    let private spreadAt (s: SvgSeries) (i: int) =
        if i < s.Spread.Length && Double.IsFinite s.Spread.[i] then
            abs s.Spread.[i]
        else
            0.0

    /// A line chart: one polyline with markers per series (finite points only), a translucent band of ± spread
    /// where it is positive, x and y ticks, axis titles and a legend. Returns the SVG document text.
    let lines (title: string) (xLabel: string) (yLabel: string) (series: SvgSeries[]) : string =
        let points (s: SvgSeries) =
            [|
                for i in 0 .. min s.X.Length s.Y.Length - 1 do
                    if Double.IsFinite s.X.[i] && Double.IsFinite s.Y.[i] then
                        s.X.[i], s.Y.[i], spreadAt s i
            |]

        let all = series |> Array.map points
        let flat = Array.concat all
        let xLo, xHi = finiteRange (flat |> Seq.map (fun (x, _, _) -> x))

        let yLo, yHi = finiteRange (flat |> Seq.collect (fun (_, y, e) -> [ y - e; y + e ]))

        let xTicks = niceTicks xLo xHi 6
        let yTicks = niceTicks yLo yHi 5
        let legendWidth = 170.0
        let left, top, right, bottom = 70.0, 40.0, Width - legendWidth, Height - 50.0
        let sb = StringBuilder()
        let mapY = frame sb title yLabel (left, top, right, bottom) yTicks
        let x0, x1 = xTicks.[0], xTicks.[xTicks.Length - 1]

        let mapX (v: float) =
            left + (v - x0) / (x1 - x0) * (right - left)

        for t in xTicks do
            sb.AppendFormat(
                "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#333\"/>"
                + "<text class=\"xtick\" x=\"{0}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
                c (mapX t),
                c bottom,
                c (bottom + 5.0),
                c (bottom + 18.0),
                esc (formatTick t)
            )
            |> ignore

        sb.AppendFormat(
            "<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\">{2}</text>\n",
            c ((left + right) / 2.0),
            c (Height - 12.0),
            esc xLabel
        )
        |> ignore

        for i, s in Array.indexed series do
            let pts = all.[i]
            let col = color i

            if pts |> Array.exists (fun (_, _, e) -> e > 0.0) then
                let upper =
                    pts
                    |> Array.map (fun (x, y, e) -> sprintf "%s,%s" (c (mapX x)) (c (mapY (y + e))))

                let lower =
                    pts
                    |> Array.rev
                    |> Array.map (fun (x, y, e) -> sprintf "%s,%s" (c (mapX x)) (c (mapY (y - e))))

                sb.AppendFormat(
                    "<polygon class=\"band\" data-series=\"{0}\" points=\"{1}\" fill=\"{2}\" fill-opacity=\"0.18\" stroke=\"none\"/>\n",
                    esc s.Name,
                    String.Join(" ", Array.append upper lower),
                    col
                )
                |> ignore

            let line =
                pts |> Array.map (fun (x, y, _) -> sprintf "%s,%s" (c (mapX x)) (c (mapY y)))

            sb.AppendFormat(
                "<polyline class=\"series\" data-series=\"{0}\" points=\"{1}\" fill=\"none\" stroke=\"{2}\" stroke-width=\"2\"/>\n",
                esc s.Name,
                String.Join(" ", line),
                col
            )
            |> ignore

            if pts.Length <= 60 then
                for x, y, _ in pts do
                    sb.AppendFormat(
                        "<circle cx=\"{0}\" cy=\"{1}\" r=\"2.5\" fill=\"{2}\"/>",
                        c (mapX x),
                        c (mapY y),
                        col
                    )
                    |> ignore

                sb.Append('\n') |> ignore

            let ly = top + 8.0 + 20.0 * float i

            sb.AppendFormat(
                "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\" stroke-width=\"3\"/>"
                + "<text class=\"legend\" x=\"{4}\" y=\"{1}\" dominant-baseline=\"middle\">{5}</text>\n",
                c (right + 14.0),
                c ly,
                c (right + 34.0),
                col,
                c (right + 40.0),
                esc s.Name
            )
            |> ignore

        sb.Append("</svg>\n").ToString()

    /// A bar chart: one bar per entry (from 0, so negative values point down) with a ± error bar where the error
    /// is positive, the value above each bar, labels under the bars (slanted when long) and a y axis. Non-finite
    /// values draw no bar. Returns the SVG document text.
    let bars (title: string) (yLabel: string) (entries: SvgBar[]) : string =
        let err (b: SvgBar) =
            if Double.IsFinite b.Error then abs b.Error else 0.0

        let lo, hi =
            finiteRange (
                entries
                |> Seq.filter (fun b -> Double.IsFinite b.Value)
                |> Seq.collect (fun b -> [ 0.0; b.Value - err b; b.Value + err b ])
            )

        let yTicks = niceTicks lo hi 5
        let slanted = entries |> Array.exists (fun b -> b.Label.Length > 8)
        let left, top, right = 70.0, 40.0, Width - 20.0
        let bottom = if slanted then Height - 100.0 else Height - 40.0
        let sb = StringBuilder()
        let mapY = frame sb title yLabel (left, top, right, bottom) yTicks
        let slot = (right - left) / float (max 1 entries.Length)
        let barWidth = min 80.0 (slot * 0.6)

        for i, b in Array.indexed entries do
            let centre = left + slot * (float i + 0.5)
            let col = color i

            if Double.IsFinite b.Value then
                let y0, y1 = mapY 0.0, mapY b.Value

                sb.AppendFormat(
                    "<rect class=\"bar\" data-label=\"{0}\" data-value=\"{1}\" x=\"{2}\" y=\"{3}\" width=\"{4}\" height=\"{5}\" fill=\"{6}\">"
                    + "<title>{0}: {7}</title></rect>\n",
                    esc b.Label,
                    b.Value.ToString("R", inv),
                    c (centre - barWidth / 2.0),
                    c (min y0 y1),
                    c barWidth,
                    c (abs (y1 - y0)),
                    col,
                    esc (
                        if err b > 0.0 then
                            sprintf "%s ± %s" (formatTick b.Value) (formatTick (err b))
                        else
                            formatTick b.Value
                    )
                )
                |> ignore

                let e = err b

                if e > 0.0 then
                    let ya, yb = mapY (b.Value + e), mapY (b.Value - e)

                    sb.AppendFormat(
                        "<path class=\"errorbar\" data-label=\"{0}\" d=\"M{1},{2} V{3} M{4},{2} H{5} M{4},{3} H{5}\" "
                        + "stroke=\"#222\" stroke-width=\"1.5\" fill=\"none\"/>\n",
                        esc b.Label,
                        c centre,
                        c ya,
                        c yb,
                        c (centre - 8.0),
                        c (centre + 8.0)
                    )
                    |> ignore

                let labelY = (min (mapY (b.Value + e)) (mapY (b.Value - e))) - 5.0

                sb.AppendFormat(
                    "<text class=\"value\" x=\"{0}\" y=\"{1}\" text-anchor=\"middle\" font-size=\"11\">{2}</text>\n",
                    c centre,
                    c labelY,
                    esc (formatTick b.Value)
                )
                |> ignore

            if slanted then
                sb.AppendFormat(
                    "<text class=\"label\" x=\"{0}\" y=\"{1}\" text-anchor=\"end\" transform=\"rotate(-30 {0} {1})\">{2}</text>\n",
                    c centre,
                    c (bottom + 14.0),
                    esc b.Label
                )
                |> ignore
            else
                sb.AppendFormat(
                    "<text class=\"label\" x=\"{0}\" y=\"{1}\" text-anchor=\"middle\">{2}</text>\n",
                    c centre,
                    c (bottom + 18.0),
                    esc b.Label
                )
                |> ignore

        // the zero line when the axis spans negative values
        if yTicks.[0] < 0.0 then
            sb.AppendFormat(
                "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#333\"/>\n",
                c left,
                c (mapY 0.0),
                c right
            )
            |> ignore

        sb.Append("</svg>\n").ToString()
