// A C# consumer of the library: frames from a backbone, a rigid motion, and the equivariance check
// frames(G x) == G ∘ frames(x). Exits 0 and prints "ok" when it holds.
using Esm3Structure;
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
Console.WriteLine("ok");
return 0;
