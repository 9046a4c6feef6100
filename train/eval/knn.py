"""Weighted kNN classification on frozen features (Wu et al., 2018; lightly's benchmark protocol):

    s_j = cos(f, f_j) for the k most similar training features,  w_j = exp(s_j / T)
    score(c) = sum_j w_j [y_j = c],  prediction = argmax_c score(c)          (k = 200, T = 0.1)
"""
import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                k: int = 200, temperature: float = 0.1, chunk: int = 1024) -> torch.Tensor:
    # train_features: [N, D], train_labels: [N], test_features: [M, D] -> predicted labels [M]
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    n_classes = int(train_labels.max()) + 1
    k = min(k, len(train))
    predictions = []
    for start in range(0, len(test), chunk):
        similarity, index = (test[start:start + chunk] @ train.T).topk(k, dim=1)  # [m, k]
        votes = torch.zeros(len(similarity), n_classes, device=test.device)
        votes.scatter_add_(1, train_labels[index], (similarity / temperature).exp())
        predictions.append(votes.argmax(1))
    return torch.cat(predictions)


def knn_accuracy(train_features, train_labels, test_features, test_labels, k: int = 200, temperature: float = 0.1):
    return float((knn_predict(train_features, train_labels, test_features, k, temperature) == test_labels).float().mean())
