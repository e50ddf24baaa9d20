// A C# consumer of the library: frames from a backbone, a rigid motion, and the equivariance check
// frames(G x) == G ∘ frames(x). Exits 0 and prints "ok" when it holds.
using Esm3Structure;
using Esm3Structure.Design;
using Esm3Structure.Models;
using Esm3Structure.Geometry;
using Esm3Structure.Native;
using TorchSharp;
using static TorchSharp.torch;

TorchNative.ensureLoaded();
using var scope = torch.NewDisposeScope();
var generator = new Generator(2024);

// Three residues of N, CA, C (Å): [L=3, atoms=3, xyz=3].
var backbone = torch.tensor(new double[] {
    -0.53, 1.36, 0.00,   0.00, 0.00, 0.00,   1.53, 0.00, 0.00,
     2.09, 1.19, 0.21,   3.53, 1.40, 0.36,   4.20, 0.03, 0.47,
     5.52, -0.05, 0.33,  6.27, -1.30, 0.42,  7.77, -1.05, 0.29 }, dtype: ScalarType.Float64).reshape(3, 3, 3);

BackboneFrames frames = FrameModule.ofBackbone(backbone);
Frame motion = FrameModule.random(Array.Empty<long>(), 25.0, ScalarType.Float64, CPU, generator);
BackboneFrames moved = FrameModule.ofBackbone(FrameModule.apply(motion, backbone));
Frame expected = FrameModule.compose(motion, frames.Frames);

double rotationError = (moved.Frames.R - expected.R).abs().max().ToDouble();
double translationError = (moved.Frames.T - expected.T).abs().max().ToDouble();
bool allFramed = frames.Mask.all().ToBoolean();
Console.WriteLine($"C# consumer: framed={allFramed} rotation error={NumberFormat.scientific(2, rotationError)} translation error={NumberFormat.scientific(2, translationError)}");

if (!allFramed || rotationError > 1e-12 || translationError > 1e-10)
{
    Console.Error.WriteLine("C# consumer: equivariance check failed");
    return 1;
}
// Generation from C#: SS8 for a sequence prompt with a seeded (untrained) multi-track model, through JSON and back.
using (var model = new MultiTrackModel(MultiTrackConfigModule.small, generator))
{
    var designer = ProteinDesigner.Of(model, null, null);
    var prompt = ProteinModule.ofSequence("prompt", "MKVLAAGG");
    var config = GenerationConfigModule.esm3(GenerationTrack.Ss8);
    Protein[] samples = ProteinGeneration.generate(designer, config, 0, null, new[] { prompt, prompt });
    Protein[] back = ProteinModule.ofJson("memory.json", ProteinModule.toJson(samples));
    bool same = back.Length == 2 && back[0].SecondaryStructure == samples[0].SecondaryStructure;
    Console.WriteLine($"C# consumer: generated SS8 {samples[0].SecondaryStructure} and {samples[1].SecondaryStructure}; JSON round trip {same}");
    if (!same || samples[0].SecondaryStructure.Length != 8 || samples[0].SecondaryStructure.Contains('_'))
    {
        Console.Error.WriteLine("C# consumer: generation check failed");
        return 1;
    }
}

// Token search from C#: seeded (untrained) encoder and decoder, the three residues above as a chain.
using (var encoder = new StructureEncoder(StructureEncoderConfigModule.small, generator))
using (var decoder = new StructureDecoder(StructureDecoderConfigModule.small))
{
    var atom37 = torch.full(new long[] { 3, 37, 3 }, double.NaN, dtype: ScalarType.Float32);
    atom37.narrow(1, 0, 3).copy_(backbone.to_type(ScalarType.Float32));
    var chain = Esm3Structure.Structure.ProteinChainModule.ofAtom37Tensor("three", "A", "GAG", new[] { 1, 2, 3 }, atom37);
    var search = new TokenSearchConfig(4, 4, 2, 1);
    TokenSearchResult found = TokenSearch.search(search, encoder, decoder, chain);
    Console.WriteLine($"C# consumer: token search LDDT-CA {found.NearestLddtCa:F3} -> {found.LddtCa:F3}, {found.Changed} changed in {found.Rounds} rounds");
    if (found.Tokenized.Tokens.Length != 3 || found.LddtCa < found.NearestLddtCa)
    {
        Console.Error.WriteLine("C# consumer: token search check failed");
        return 1;
    }
}

// The training loops' heap policy from C#: Main runs on the process's first thread, where a scope keeps freed
// native memory for reuse until it is disposed (Linux's glibc only).
if (OperatingSystem.IsLinux())
{
    bool first = NativeHeap.isMainThread();
    bool inside;
    using (NativeHeap.retainFreedMemory())
    {
        inside = NativeHeap.isRetaining();
    }
    bool after = NativeHeap.isRetaining();
    Console.WriteLine($"C# consumer: native heap first thread={first} retaining inside={inside} after={after}");
    if (!first || !inside || after)
    {
        Console.Error.WriteLine("C# consumer: native heap check failed");
        return 1;
    }
}

Console.WriteLine("ok");
return 0;
